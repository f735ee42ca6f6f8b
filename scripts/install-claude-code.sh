#!/usr/bin/env bash
# Install the real Claude Code CLI (npm package @anthropic-ai/claude-code, pinned) under
# .local/claude-code, for the end-to-end tests that run it against a local model stub
# (tests/e2e/test_claude_code_hooks.py with `tokentide hook` installed, test_agent_clients.py).
# Idempotent: does nothing when that version is there.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly version=2.1.332 prefix=.local/claude-code
bin=$prefix/node_modules/.bin/claude
if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "$version "* ]]; then
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install-claude-code: npm is needed (Node.js)" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$version"
echo "install-claude-code: $("$bin" --version)" >&2
