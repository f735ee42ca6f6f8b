"""The local state of one task (one input partition number): an embedded key-value store.

The changelog topic is the truth; the local store is a cache of it that makes restarts
fast. It is written only *after* the Kafka transaction that wrote the same values to the
changelog committed, in one atomic batch together with the changelog offset it reflects, so
it never holds anything a transaction aborted. A worker that dies between the commit and
the local write finds its store behind the changelog and reads the difference on restart.

Keys are session keys (``tenant/session``) plus two of the runtime's own, which start with a
byte no session key starts with: :data:`POSITIONS_KEY` (the next raw offset to apply per raw
topic, written to the changelog in the same transaction as the states, so state and input
position can never disagree) and :data:`CHANGELOG_KEY` (local only: the next changelog
offset to read).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict, WriteBatch

POSITIONS_KEY = b"\x00positions"
CHANGELOG_KEY = b"\x00changelog"


def encode_positions(positions: dict[str, int]) -> bytes:
    return json.dumps(positions, sort_keys=True, separators=(",", ":")).encode()


def decode_positions(value: bytes | None) -> dict[str, int]:
    return {} if value is None else {str(k): int(v) for k, v in json.loads(value).items()}


class StateStore(Protocol):
    """What the runtime needs of a task's store."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, values: dict[bytes, bytes | None], changelog_next: int) -> None:
        """Store ``values`` (None: delete the key) and the changelog offset they reach, atomically."""
        ...

    def changelog_next(self) -> int:
        """The next changelog offset to read (0: nothing read yet)."""
        ...

    def wipe(self) -> None:
        """Forget everything (the changelog is then read from its beginning)."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A dict: state lives only in the changelog and memory (tests, or no local disk)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, values: dict[bytes, bytes | None], changelog_next: int) -> None:
        for key, value in values.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        self._data[CHANGELOG_KEY] = str(changelog_next).encode()

    def changelog_next(self) -> int:
        value = self._data.get(CHANGELOG_KEY)
        return int(value) if value is not None else 0

    def wipe(self) -> None:
        self._data.clear()

    def close(self) -> None:
        return None


class RocksStore:
    """RocksDB (rocksdict) in ``path``: one database per task, raw bytes in and out."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Rdict | None = self._open()

    def _open(self) -> Rdict:
        return Rdict(str(self._path), options=Options(raw_mode=True))

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"store {self._path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        value = self.db.get(key)
        return None if value is None else bytes(value)

    def write(self, values: dict[bytes, bytes | None], changelog_next: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in values.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHANGELOG_KEY, str(changelog_next).encode())
        self.db.write(batch)

    def changelog_next(self) -> int:
        value = self.get(CHANGELOG_KEY)
        return int(value) if value is not None else 0

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self._path, ignore_errors=True)
        self._db = self._open()

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
