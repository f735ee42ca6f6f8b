#!/usr/bin/env bash
# Vendor the dashboard's browser libraries from the npm registry (exact versions from
# dashboard/web/package-lock.json) into dashboard/static/vendor/, so the web UI works offline
# and loads nothing from a CDN. Idempotent: does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly web=dashboard/web vendor=dashboard/static/vendor
readonly files=("uplot/dist/uPlot.iife.min.js" "uplot/dist/uPlot.min.css")

have_all() {
    local f
    for f in "${files[@]}"; do [[ -s $vendor/$(basename "$f") ]] || return 1; done
    # the vendored copy must be the locked version
    [[ -f $vendor/.lock && $(cat "$vendor/.lock") == $(sha256sum "$web/package-lock.json" | cut -c1-64) ]]
}

have_all && exit 0
command -v npm >/dev/null 2>&1 || { echo "vendor-web: npm is needed (Node.js)" >&2; exit 1; }
npm ci --prefix "$web" --no-audit --no-fund --ignore-scripts --loglevel=error
mkdir -p "$vendor"
for f in "${files[@]}"; do cp "$web/node_modules/$f" "$vendor/"; done
sha256sum "$web/package-lock.json" | cut -c1-64 >"$vendor/.lock"
echo "vendor-web: $(cd "$vendor" && ls | tr '\n' ' ')" >&2
