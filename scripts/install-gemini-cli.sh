#!/usr/bin/env bash
# Install the real Gemini CLI (npm package @google/gemini-cli, pinned) under .local/gemini-cli,
# for tests/e2e/test_agent_clients.py, which runs it against a local model stub with its OTLP
# export going to the pipeline. Idempotent: does nothing when that version is there.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly version=0.61.0 prefix=.local/gemini-cli
bin=$prefix/node_modules/.bin/gemini
if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "$version" ]]; then
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install-gemini-cli: npm is needed (Node.js 20+)" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "@google/gemini-cli@$version"
echo "install-gemini-cli: $("$bin" --version)" >&2
