"""The LZ4 level of aiokafka's record batches (tokentide/compression.py, decision 46)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.codec import lz4_decode, lz4_encode
from aiokafka.producer.message_accumulator import DefaultRecordBatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from tokentide import compression
from tokentide.compression import BUILDER_MODULES, lz4_fast, use_fast_lz4

# Compressible like a batch of OTLP exports: repeated keys and names, varying numbers.
PAYLOAD = b"".join(
    b'{"session.id":"s-%d","event.name":"api_request","model":"claude-opus-4","input_tokens":%d}'
    % (i % 7, i * 31)
    for i in range(400)
)
LZ4 = 0x03  # the record batch attributes' codec bits


@pytest.fixture
def builders() -> Iterator[None]:
    """Each builder module's ``lz4_encode`` put back as it was after the test."""
    saved = {}
    for name in BUILDER_MODULES:
        try:
            saved[name] = vars(importlib.import_module(name))["lz4_encode"]
        except ImportError:
            continue
    yield
    for name, encode in saved.items():
        vars(importlib.import_module(name))["lz4_encode"] = encode


def a_batch() -> bytes:
    """One compressed record batch as aiokafka's producer builds it (its accumulator's class)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=LZ4,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(20):
        builder.append(offset=i, timestamp=None, key=b"k", value=PAYLOAD[i * 100 :], headers=[])
    return bytes(builder.build())


def test_fast_frames_are_what_kafka_reads() -> None:
    """Independent blocks, no content checksum: aiokafka's decoder (what the broker and every
    consumer read) gives the payload back."""
    frame = lz4_fast(PAYLOAD)
    assert lz4_decode(frame) == PAYLOAD
    flags = frame[4]  # the frame descriptor's FLG byte after the 4-byte magic number
    assert flags & 0x20, "blocks must be independent (Kafka does not read linked blocks)"
    assert not flags & 0x04, "no content checksum"


def test_the_fast_level_is_not_lz4hc() -> None:
    """aiokafka's own level (9) is LZ4HC: smaller frames, and what this module replaces."""
    assert compression.LZ4_LEVEL < 3  # LZ4HC starts at 3
    assert len(lz4_encode(PAYLOAD)) < len(lz4_fast(PAYLOAD))


@pytest.mark.usefixtures("builders")
def test_the_producers_batch_builder_compresses_at_the_fast_level(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(payload: Any, level: int = compression.LZ4_LEVEL) -> bytes:
        calls.append(len(payload))
        return lz4_fast(payload, level)

    for name in BUILDER_MODULES:  # as aiokafka ships
        monkeypatch.setitem(vars(importlib.import_module(name)), "lz4_encode", lz4_encode)
    before = a_batch()
    assert not calls
    monkeypatch.setattr(compression, "lz4_fast", spy)
    use_fast_lz4()
    after = a_batch()
    assert calls, "the producer's batch builder did not call lz4_fast"
    assert len(after) > len(before), "the batch is still compressed at aiokafka's level 9"
    # ...and reads back record for record.
    records = [r.value for r in DefaultRecordBatch(bytearray(after))]
    assert records == [PAYLOAD[i * 100 :] for i in range(20)]


@pytest.mark.usefixtures("builders")
def test_use_fast_lz4_is_idempotent_and_refuses_a_moved_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_lz4()
    use_fast_lz4()
    for name in BUILDER_MODULES:
        module = importlib.import_module(name)
        assert vars(module)["lz4_encode"] is lz4_fast
    module = importlib.import_module(BUILDER_MODULES[0])
    monkeypatch.delitem(vars(module), "lz4_encode")
    with pytest.raises(RuntimeError, match="decision 46"):
        use_fast_lz4()
