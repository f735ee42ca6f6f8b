"""Per-agent normalisers behind one interface, and the default registry."""

from streams.normalise.base import Normaliser, Origin, Registry, SessionRecords
from streams.normalise.claude_code import ClaudeCodeNormaliser
from streams.normalise.codex import CodexNormaliser
from streams.normalise.gemini_cli import GeminiCliNormaliser
from streams.normalise.generic import GenericNormaliser


def default_registry() -> Registry:
    """Every normaliser tokentide ships, most specific first, the generic one last."""
    return Registry([ClaudeCodeNormaliser(), GeminiCliNormaliser(), CodexNormaliser(), GenericNormaliser()])


__all__ = [
    "ClaudeCodeNormaliser",
    "CodexNormaliser",
    "GeminiCliNormaliser",
    "GenericNormaliser",
    "Normaliser",
    "Origin",
    "Registry",
    "SessionRecords",
    "default_registry",
]
