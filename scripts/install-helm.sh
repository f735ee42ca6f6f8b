#!/usr/bin/env bash
# Install Helm into <repo>/.local/bin/helm, built from the Go module proxy, for the chart checks
# (tests/deploy: `helm lint`, `helm template`). Called by `make install`, hence by `.ci/run`.
#
# Contract: idempotent. When .local/bin/helm is already this version it only checks (go version -m)
# and exits 0 at once. Needs Go 1.24+ (`go` on PATH or /usr/local/go/bin); exits 1 saying so
# otherwise. The first build takes a few minutes on two cores.
set -euo pipefail

readonly HELM_VERSION=v3.22.0
readonly MODULE=helm.sh/helm/v3
REPO=$(cd "$(dirname "$0")/.." && pwd)
readonly BIN="$REPO/.local/bin"
readonly TARGET="$BIN/helm"

log() { printf 'install-helm: %s\n' "$*" >&2; }

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

main() {
    local go
    if ! go=$(find_go); then
        log "go not found: install Go 1.24+ (https://go.dev/dl or your package manager), then re-run"
        return 1
    fi
    # The module version the binary was built from, as recorded by the Go toolchain.
    if [[ -x $TARGET ]] && "$go" version -m "$TARGET" 2>/dev/null | awk '$1 == "mod" {print $3}' \
        | grep -qxF "$HELM_VERSION"; then
        log "helm $HELM_VERSION present ($TARGET)"
        return 0
    fi
    log "building helm $HELM_VERSION from the Go module proxy (first run only; a few minutes)"
    mkdir -p "$BIN"
    # -mod=mod: resolve the dependencies from Helm's own go.mod; CGO off: a static binary.
    GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOBIN="$BIN" "$go" install \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "$MODULE/cmd/helm@$HELM_VERSION"
    "$TARGET" version --short >&2
}

main "$@"
