"""API keys: the ``tt_<key_id>_<secret>`` format, its digest, and the ``Authorization`` header."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.auth import bearer_key
from ingest.errors import Unauthorized
from tokentide.admin import ApiKey, MalformedKey, new_key, parse_key, secret_digest

FORMAT = re.compile(r"tt_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
SECRET = ("Zq9_-" * 9)[:43]  # a valid secret, with the separator "_" in it
KEY = f"tt_0123456789ab_{SECRET}"


def test_new_keys_have_the_documented_format_and_differ() -> None:
    keys = [new_key() for _ in range(100)]
    assert all(FORMAT.fullmatch(k.token) for k in keys)
    assert len({k.key_id for k in keys}) == len({k.secret for k in keys}) == 100


def test_the_secret_stays_out_of_repr() -> None:
    key = new_key()
    assert key.secret not in repr(key)
    assert key.key_id in repr(key)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=6, max_size=6))
def test_every_key_parses_back(secret: bytes, key_id: bytes) -> None:
    # The secret alphabet includes "_", the separator: parsing must split by position.
    key = ApiKey(key_id.hex(), base64.urlsafe_b64encode(secret).rstrip(b"=").decode())
    assert parse_key(key.token) == key


def test_secret_digest_is_sha256() -> None:
    assert secret_digest(SECRET) == hashlib.sha256(SECRET.encode()).digest()
    assert len(secret_digest(SECRET)) == 32


@pytest.mark.parametrize(
    "text",
    [
        "",
        SECRET,
        f"tk_0123456789ab_{SECRET}",  # wrong prefix
        f"TT_0123456789ab_{SECRET}",
        f"tt_0123456789AB_{SECRET}",  # upper-case id
        f"tt_0123456789a_{SECRET}",  # id too short
        f"tt_0123456789abc_{SECRET}",  # id too long
        f"tt_0123456789ab_{SECRET[:-1]}",  # secret too short
        f"tt_0123456789ab_{SECRET}s",  # secret too long
        f"tt_0123456789ab_{SECRET[:-1]}=",  # padding is not part of the format
        f"tt_0123456789ab_{SECRET[:-1]}+",  # standard base64, not base64url
        f"{KEY}\n",
        f" {KEY}",
    ],
)
def test_malformed_keys_are_refused_without_echo(text: str) -> None:
    with pytest.raises(MalformedKey) as info:
        parse_key(text)
    assert SECRET[:20] not in str(info.value)


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER  {KEY} "])
def test_bearer_header(header: str) -> None:
    assert bearer_key(header) == ApiKey("0123456789ab", SECRET)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        (KEY, "Bearer"),  # the key without a scheme
        (f"Basic {KEY}", "Bearer"),
        ("Bearer", "malformed"),
        ("Bearer ", "malformed"),
        (f"Bearer {KEY[:-3]}", "malformed"),
        (f"Bearer {KEY} extra", "malformed"),
    ],
)
def test_bad_authorization_is_401_saying_why_without_the_secret(header: str | None, says: str) -> None:
    with pytest.raises(Unauthorized) as info:
        bearer_key(header)
    assert says in info.value.message
    assert SECRET[:20] not in info.value.message
