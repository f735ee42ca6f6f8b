"""Checkpoint summaries and transcript snapshots (pure parts of dashboard.checkpoints)."""

from __future__ import annotations

import base64
import gzip
import os

import pytest
from fastapi import HTTPException

from dashboard.checkpoints import CheckpointIn, summary_of, transcript

TEXT = b"".join(b'{"turn": %d}\n' % i for i in range(1000))


def body(raw: bytes = TEXT) -> CheckpointIn:
    return CheckpointIn(transcript_gzip_b64=base64.b64encode(gzip.compress(raw)).decode())


@pytest.mark.parametrize("privacy", [None, "hash", "drop"])
def test_a_private_tenant_keeps_no_transcript(privacy: str | None) -> None:
    assert transcript(body(), privacy, 1 << 20) == (None, None, False)


def test_a_tenant_without_privacy_keeps_it_compressed() -> None:
    stored, size, truncated = transcript(body(), "off", 1 << 20)
    assert stored is not None
    assert gzip.decompress(stored) == TEXT
    assert (size, truncated) == (len(TEXT), False)


def test_a_snapshot_over_the_cap_keeps_its_tail() -> None:
    noise = os.urandom(200_000)  # incompressible
    stored, size, truncated = transcript(body(noise + TEXT), "off", 50_000)
    assert stored is not None
    assert truncated
    assert gzip.decompress(stored).endswith(TEXT[-1000:])
    assert size is not None
    assert size < len(noise) + len(TEXT)


def test_a_snapshot_that_is_not_gzip_base64_is_refused() -> None:
    with pytest.raises(HTTPException) as refused:
        transcript(CheckpointIn(transcript_gzip_b64="not base64!"), "off", 1 << 20)
    assert refused.value.status_code == 422
    with pytest.raises(HTTPException):
        transcript(CheckpointIn(transcript_gzip_b64=base64.b64encode(b"plain").decode()), "off", 1 << 20)


def test_the_summary_holds_what_is_known() -> None:
    hooked = CheckpointIn(todos=[{"content": "port the tests", "status": "pending"}], note="before lunch")
    assert summary_of(None, ["e1"], hooked) == {
        "last_prompt_event_ids": ["e1"],
        "todos": [{"content": "port the tests", "status": "pending"}],
        "note": "before lunch",
    }
    assert summary_of({"session_id": "s"}, [], CheckpointIn())["session"] == {"session_id": "s"}
