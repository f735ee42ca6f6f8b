#!/usr/bin/env bash
# Build TimescaleDB from a source tarball and install it into a relocated copy of the system's
# PostgreSQL under <repo>/.local/timescaledb/, for the suite's TimescaleDB leg and `make up`
# (scripts/stack.py). The system PostgreSQL is left untouched, so clusters started from it (the
# plain-layout leg) stay plain: `timescaledb` is not even in their pg_available_extensions.
#
#   TIMESCALEDB_SOURCE=/path/to/timescaledb-2.28.3.tar.gz bash scripts/install-timescaledb.sh
#
# Prints the bin directory of the PostgreSQL copy with TimescaleDB (initdb, pg_ctl, postgres) on
# stdout, and nothing else; progress goes to stderr, the build's output to
# .local/timescaledb/build.log.
#
# Contract: idempotent and cached. The copy is built once per source tarball (its sha256) and
# PostgreSQL version; later calls print its path at once, also without TIMESCALEDB_SOURCE. Exit 0:
# printed; 2: no TimescaleDB source given and none built yet (not an error; stack.py decides);
# 1: the build failed or its tools are missing (the message says which).
#
# Build needs: the server headers of the PostgreSQL it builds against (postgresql-server-dev-<major>,
# pinned to the installed server's version so the running server's binaries are not upgraded),
# cmake and a C compiler; as root with apt-get it installs the missing ones. About 2.5 minutes
# on two cores. PostgreSQL finds its share and lib directories relative to its binaries, so the
# copy (bin, lib, share with the same relative layout) loads the extension from its own tree.
# TimescaleDB's core is Apache-2.0, tsl/ (compression, continuous aggregates, jobs) is under the
# Timescale License; it is built here only to test against it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
readonly REPO
readonly CACHE_ROOT="$REPO/.local/timescaledb"
readonly BUILD_LOG="$CACHE_ROOT/build.log"

log() { printf 'install-timescaledb: %s\n' "$*" >&2; }

# The pg_config of the PostgreSQL to build against: $PG_CONFIG, else the newest Debian major
# under /usr/lib/postgresql, else pg_config on PATH.
find_pg_config() {
    if [[ -n ${PG_CONFIG:-} ]]; then
        echo "$PG_CONFIG"
        return
    fi
    local candidate best="" best_major=0 major
    for candidate in /usr/lib/postgresql/*/bin/pg_config; do
        [[ -x $candidate ]] || continue
        major=$(basename "$(dirname "$(dirname "$candidate")")")
        [[ $major =~ ^[0-9]+$ ]] && ((major > best_major)) && best=$candidate best_major=$major
    done
    if [[ -n $best ]]; then
        echo "$best"
    elif command -v pg_config >/dev/null 2>&1; then
        command -v pg_config
    else
        return 1
    fi
}

# Longest common directory prefix of the arguments (absolute paths).
common_prefix() {
    local prefix=$1 path
    for path in "$@"; do
        while [[ $path != "$prefix" && $path != "$prefix"/* ]]; do
            prefix=$(dirname "$prefix")
        done
    done
    echo "$prefix"
}

# Install the build's tools when missing (as root, with apt-get); 1 when they stay missing.
ensure_build_tools() {
    local pg_config=$1 major=$2
    local -a missing=()
    [[ -f "$("$pg_config" --includedir-server)/postgres.h" ]] || missing+=("postgresql-server-dev-$major")
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    ((${#missing[@]} == 0)) && return 0
    if ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; then
        log "missing to build TimescaleDB: ${missing[*]}"
        log "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
        return 1
    fi
    # The headers at the installed server's exact version: an unpinned install would upgrade
    # postgresql-<major> (server-dev depends on it) under any cluster running from it.
    local server_version i
    server_version=$(dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null || true)
    for i in "${!missing[@]}"; do
        if [[ ${missing[i]} == postgresql-server-dev-* && -n $server_version ]] \
            && apt-cache madison "${missing[i]}" 2>/dev/null | grep -qF " $server_version "; then
            missing[i]="${missing[i]}=$server_version"
        fi
    done
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    [[ -f "$("$pg_config" --includedir-server)/postgres.h" ]] && command -v cmake >/dev/null 2>&1
}

main() {
    local pg_config
    if ! pg_config=$(find_pg_config); then
        log "no PostgreSQL found (pg_config): run \`bash scripts/install-system-deps.sh\` first"
        return 1
    fi
    local pg_version bindir pkglibdir sharedir major
    pg_version=$("$pg_config" --version | awk '{print $2}')
    major=${pg_version%%.*}
    bindir=$("$pg_config" --bindir)
    pkglibdir=$("$pg_config" --pkglibdir)
    sharedir=$("$pg_config" --sharedir)

    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.lock"
    flock 9  # one build at a time per checkout; a second caller then finds the cache

    local source=${TIMESCALEDB_SOURCE:-} digest="" marker
    if [[ -n $source ]]; then
        if [[ ! -f $source ]]; then
            log "TIMESCALEDB_SOURCE=$source is not a file (expected a timescaledb-<version>.tar.gz)"
            return 1
        fi
        digest=$(sha256sum "$source" | cut -c1-16)
    fi
    # A copy built before for this PostgreSQL version (from this source, when one is given).
    for marker in "$CACHE_ROOT"/*/.installed; do
        [[ -f $marker ]] || continue
        if grep -qxF "pg_version=$pg_version" "$marker" \
            && { [[ -z $digest ]] || grep -qxF "source_sha256=$digest" "$marker"; }; then
            local cached_bin
            cached_bin="$(dirname "$marker")/pg${bindir#"$(common_prefix "$bindir" "$pkglibdir" "$sharedir")"}"
            if [[ -x $cached_bin/postgres ]]; then
                log "TimescaleDB $(sed -n 's/^version=//p' "$marker") for PostgreSQL $pg_version present ($cached_bin)"
                echo "$cached_bin"
                return 0
            fi
        fi
    done
    if [[ -z $source ]]; then
        log "no TimescaleDB built yet and TIMESCALEDB_SOURCE is not set"
        return 2
    fi

    ensure_build_tools "$pg_config" "$major" || return 1
    local top version
    top=$({ tar -tzf "$source" 2>/dev/null || true; } | head -n 1 | cut -d/ -f1)  # tar: SIGPIPE
    version=${top#timescaledb-}
    if [[ ! $top =~ ^timescaledb-[0-9] ]]; then
        log "$source does not hold a timescaledb-<version>/ tree (found $top)"
        return 1
    fi
    local target="$CACHE_ROOT/$version-$digest-pg$pg_version"
    local work="$CACHE_ROOT/build"
    rm -rf "$work" "$target"
    mkdir -p "$work"
    log "building TimescaleDB $version against PostgreSQL $pg_version (first run only; ~2.5 min on 2 cores; log: $BUILD_LOG)"
    tar -xzf "$source" -C "$work"
    local jobs
    jobs=$(nproc 2>/dev/null || echo 2)
    if ! (
        cd "$work/$top"
        # Telemetry off by default: a test server must not phone home.
        BUILD_DIR=build ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
            -DLINTER=OFF -DCMAKE_BUILD_TYPE=Release -DSEND_TELEMETRY_DEFAULT=OFF -DPG_CONFIG="$pg_config"
        make -C build -j"$jobs"
        make -C build install DESTDIR="$work/stage"
    ) >"$BUILD_LOG" 2>&1; then
        log "the build failed; end of $BUILD_LOG:"
        tail -n 30 "$BUILD_LOG" >&2
        return 1
    fi

    # The copy: bin, lib and share at the same places relative to each other as in the system's
    # tree, plus what `make install` staged under the same prefix.
    local prefix
    prefix=$(common_prefix "$bindir" "$pkglibdir" "$sharedir")
    local dir
    for dir in "$bindir" "$pkglibdir" "$sharedir"; do
        mkdir -p "$target/pg${dir#"$prefix"}"
        cp -a "$dir/." "$target/pg${dir#"$prefix"}/"
    done
    cp -a "$work/stage$prefix/." "$target/pg/"
    local new_bin="$target/pg${bindir#"$prefix"}"
    local seen_share
    seen_share=$("$new_bin/pg_config" --sharedir)
    if [[ ! -f $seen_share/extension/timescaledb.control || $seen_share != "$target"/* ]]; then
        log "the copy in $target does not find its own share directory (it sees $seen_share)"
        return 1
    fi
    printf 'version=%s\nsource_sha256=%s\npg_version=%s\n' "$version" "$digest" "$pg_version" \
        >"$target/.installed"
    rm -rf "$work"
    log "TimescaleDB $version installed for PostgreSQL $pg_version in $new_bin"
    echo "$new_bin"
}

main "$@"
