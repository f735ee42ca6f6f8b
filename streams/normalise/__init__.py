"""Per-agent normalisers behind one interface, and the default registry."""

from streams.normalise.base import Normaliser, Origin, Registry, SessionRecords
from streams.normalise.claude_code import ClaudeCodeNormaliser
from streams.normalise.generic import GenericNormaliser


def default_registry() -> Registry:
    """Every normaliser tokentide ships, most specific first, the generic one last."""
    return Registry([ClaudeCodeNormaliser(), GenericNormaliser()])


__all__ = [
    "ClaudeCodeNormaliser",
    "GenericNormaliser",
    "Normaliser",
    "Origin",
    "Registry",
    "SessionRecords",
    "default_registry",
]
