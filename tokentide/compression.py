"""The LZ4 level our producers compress at (decision 46).

aiokafka 0.11 and later compress LZ4 at level 9, LZ4HC, with no setting to change it
(aio-libs/aiokafka#1028; the fix, #1121, is not released): on the stream stage's outputs that
is ~10x slower than LZ4's fast mode for ~25% smaller batches, and it was 7-8% of a stream
worker's CPU. :func:`use_fast_lz4` makes aiokafka's record batch builders compress at
:data:`LZ4_LEVEL`. The bytes are LZ4 frames like before (independent blocks, no content
checksum: what Kafka reads), so brokers and consumers, ours and others, see no difference.
"""

from __future__ import annotations

import importlib
from typing import Any

import cramjam

#: LZ4's fast mode (levels below 3 are all the same fast compressor).
LZ4_LEVEL = 1

#: The modules whose record batch builders call ``lz4_encode`` by their own global name:
#: aiokafka's compiled builders (what its producer uses) and its pure-Python fallbacks.
BUILDER_MODULES = (
    "aiokafka.record._crecords.default_records",
    "aiokafka.record._crecords.legacy_records",
    "aiokafka.record.default_records",
    "aiokafka.record.legacy_records",
)


def lz4_fast(payload: Any, level: int = LZ4_LEVEL) -> bytes:
    """``payload`` as one LZ4 frame the way Kafka reads it, compressed at ``level``."""
    compressor = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
    compressor.compress(payload)
    return bytes(compressor.finish())


def use_fast_lz4() -> None:
    """Make every aiokafka record batch builder compress LZ4 with :func:`lz4_fast` (safe to
    call again). RuntimeError when a builder module no longer has ``lz4_encode``: an aiokafka
    upgrade moved it, and this must be looked at again rather than silently undone."""
    for name in BUILDER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # aiokafka built without its compiled extensions
            continue
        if not hasattr(module, "lz4_encode"):
            raise RuntimeError(f"{name} has no lz4_encode: see decision 46 (tokentide.compression)")
        vars(module)["lz4_encode"] = lz4_fast
