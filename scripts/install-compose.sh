#!/usr/bin/env bash
# Install the Docker Compose CLI (standalone `docker-compose`, the code of the `docker compose`
# plugin) into <repo>/.local/bin, built from the Go module proxy, so that tests/deploy can run
# `docker-compose config` on docker-compose.yml: no Docker engine is needed for that.
# Called by `make install`, hence by `.ci/run`.
#
# Contract: idempotent. When .local/bin/docker-compose is already this version it only checks
# (go version -m) and exits 0 at once. Needs Go 1.24+. The compose module carries `exclude`
# directives, which `go install module@version` refuses, so it is built from a throw-away module
# under .local/build that requires it.
set -euo pipefail

readonly COMPOSE_VERSION=v2.40.3
readonly MODULE=github.com/docker/compose/v2
REPO=$(cd "$(dirname "$0")/.." && pwd)
readonly BIN="$REPO/.local/bin"
readonly TARGET="$BIN/docker-compose"
readonly BUILD="$REPO/.local/build/compose"

log() { printf 'install-compose: %s\n' "$*" >&2; }

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
    if [[ -x $TARGET ]] && "$go" version -m "$TARGET" 2>/dev/null \
        | awk -v m="$MODULE" '($1 == "mod" || $1 == "dep") && $2 == m {print $3}' | grep -qxF "$COMPOSE_VERSION"; then
        log "docker-compose $COMPOSE_VERSION present ($TARGET)"
        return 0
    fi
    log "building docker-compose $COMPOSE_VERSION from the Go module proxy (first run only; a few minutes)"
    rm -rf "$BUILD"
    mkdir -p "$BUILD" "$BIN"
    cat >"$BUILD/go.mod" <<GOMOD
module tokentide.local/compose-build

go 1.24

require $MODULE $COMPOSE_VERSION
GOMOD
    (
        cd "$BUILD"
        export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
        "$go" get "$MODULE@$COMPOSE_VERSION"
        "$go" build -trimpath -o "$TARGET" \
            -ldflags "-s -w -X $MODULE/internal.Version=$COMPOSE_VERSION" "$MODULE/cmd"
    )
    "$TARGET" version >&2
}

main "$@"
