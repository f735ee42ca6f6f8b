"""tokentide: exact token, cost and context-window accounting for AI coding agents."""

__version__ = "0.1.0"
