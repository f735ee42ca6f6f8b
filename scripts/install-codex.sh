#!/usr/bin/env bash
# Install the real Codex CLI (npm package @openai/codex, pinned; npm picks the native binary of
# this platform from its optional dependencies) under .local/codex, for
# tests/e2e/test_agent_clients.py, which runs it against a local model stub with its OTLP export
# going to the pipeline. Idempotent: does nothing when that version is there.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly version=0.171.0 prefix=.local/codex
bin=$prefix/node_modules/.bin/codex
if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "codex-cli $version" ]]; then
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install-codex: npm is needed (Node.js)" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "@openai/codex@$version"
echo "install-codex: $("$bin" --version)" >&2
