"""Pure, bounded deduplication of a session's events and delta points.

A re-sent export (the agent retries after a timeout although ingest had written the first
copy) must change nothing; a late export that never arrived before must still count. A
:class:`DigestWindow` remembers the 8-byte digests of the last ``size`` identities applied
(event ids; delta points' series, start and end), oldest first:

- a re-send follows its original within seconds (OpenTelemetry exporters retry for tens of
  seconds), so a few hundred identities cover it; only an identity older than the window
  would count again (the price of the bound);
- nothing is ever taken for a repeat that is not one (but for a 2^-64 collision), whatever
  the arrival order, so a late first arrival always counts.

Why not runs of Claude Code's ``event.sequence`` (smaller still)? A resumed session numbers
from 0 again under the same session id, and nothing in its telemetry names the process: a
fragment of the new process that arrives before its beginning extends the old process's run
and makes the new process's first events look like repeats (decision 18).

The window serialises into one byte string of the stored state and keeps its decoded form
in memory, so that checking and adding cost O(1) per record, not O(window).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

#: Identities are remembered by 64-bit digests: a collision within one window is out of
#: reach (2^-64 per pair).
DIGEST_BYTES = 8


def digest(*parts: object) -> bytes:
    """The 8-byte digest by which an identity is remembered."""
    # The same bytes as hashing each part's repr followed by 0x1f, in one update.
    return hashlib.blake2b(
        ("\x1f".join(map(repr, parts)) + "\x1f").encode(), digest_size=DIGEST_BYTES
    ).digest()


class DigestWindow:
    """The digests of the last ``size`` identities added, oldest first.

    In a stored state it is the digests as bytes (a base64 string in states stored as JSON
    before); in memory a buffer and a set, decoded on first use.
    """

    __slots__ = ("_buffer", "_encoded", "_members")

    def __init__(self, encoded: str = "") -> None:
        self._encoded: str | None = encoded
        self._buffer: bytearray | None = None
        self._members: set[bytes] | None = None

    def _decoded(self) -> tuple[bytearray, set[bytes]]:
        buffer, members = self._buffer, self._members
        if buffer is None or members is None:
            buffer = bytearray(base64.b64decode(self._encoded or ""))
            members = {bytes(buffer[i : i + DIGEST_BYTES]) for i in range(0, len(buffer), DIGEST_BYTES)}
            self._buffer, self._members = buffer, members
        return buffer, members

    def __contains__(self, key: object) -> bool:
        return key in self._decoded()[1]

    def __len__(self) -> int:
        return len(self._decoded()[0]) // DIGEST_BYTES

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DigestWindow) and self.encoded() == other.encoded()

    def __hash__(self) -> int:  # pragma: no cover - mutable: never a dict key
        raise TypeError("DigestWindow is mutable")

    def __repr__(self) -> str:
        return f"DigestWindow({len(self)} digests)"

    def add(self, key: bytes, size: int) -> None:
        """Remember ``key``, forgetting the oldest beyond ``size`` identities."""
        buffer, members = self._decoded()
        if key in members:
            return
        self._encoded = None
        buffer += key
        members.add(key)
        excess = len(buffer) - size * DIGEST_BYTES
        if excess > 0:
            for i in range(0, excess, DIGEST_BYTES):
                members.discard(bytes(buffer[i : i + DIGEST_BYTES]))
            del buffer[:excess]

    def encoded(self) -> str:
        if self._encoded is None:
            self._encoded = base64.b64encode(self._buffer or b"").decode()
        return self._encoded

    def to_wire(self) -> bytes:
        """What a stored state holds: the digests, oldest first (MessagePack bytes)."""
        return bytes(self._decoded()[0])

    @classmethod
    def from_wire(cls, value: Any) -> DigestWindow:
        """From :meth:`to_wire`'s bytes, or the base64 string of a state stored as JSON."""
        if isinstance(value, bytes | bytearray | memoryview):
            if len(value) % DIGEST_BYTES:
                raise ValueError("a digest window is a whole number of digests")
            window = cls()
            window._buffer = bytearray(value)
            window._members = {bytes(value[i : i + DIGEST_BYTES]) for i in range(0, len(value), DIGEST_BYTES)}
            window._encoded = None
            return window
        if isinstance(value, str):
            return cls(value)
        raise ValueError("a digest window is bytes or a base64 string")
