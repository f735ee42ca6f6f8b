#!/usr/bin/env bash
# Install the system packages the local tokentide stack (scripts/stack.py) needs:
#   - a JDK, Java 17+ (runs the Kafka broker from Maven jars)
#   - Maven (fetches those jars)
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres, psql, pg_isready)
#   - runuser (util-linux; stack.py runs PostgreSQL as the `postgres` user when invoked as root)
#   - promtool (Debian's `prometheus` package; tests/deploy/test_prometheus_rules.py runs
#     `promtool check rules` and `promtool test rules` on k8s/tokentide/files/prometheus/)
#   - chromium (Debian's package; the web UI tests in tests/e2e/test_web_ui.py drive it headless
#     with Playwright)
#
# Contract: idempotent. When everything is present it only checks and exits 0 within a second.
# Missing packages are installed with apt-get (one `apt-get update` first). When not root,
# or when apt-get is unavailable, it prints what to install and exits 1.
# Installing PostgreSQL never creates Debian's system cluster: stack.py runs its own cluster
# under .local/pg, and a `main` cluster would take port 5432. Installing prometheus (for its
# promtool) never starts the Prometheus server the package ships (see no_service_start).
set -euo pipefail

readonly CREATECLUSTER_CONF=/etc/postgresql-common/createcluster.conf
readonly POLICY_RC_D=/usr/sbin/policy-rc.d

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

# True when `java` is Java 17 or newer and `javac` exists (a JDK, not only a JRE).
have_jdk() {
    command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || return 1
    local version major
    version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
    major=${version%%.*}
    [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$version")  # "1.8.0_x" style
    [[ $major =~ ^[0-9]+$ ]] && ((major >= 17))
}

# True when some /usr/lib/postgresql/<major>/bin holds the server binaries stack.py uses,
# and the client tools are on PATH.
have_postgres_server() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [[ -x $bin/initdb && -x $bin/pg_ctl && -x $bin/postgres ]]; then
            command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1
            return
        fi
    done
    return 1
}

# Make postgresql-common's pg_createcluster skip the `main` cluster on package install.
# Edits the file in place when postgresql-common already wrote it (managed by ucf), else creates it.
disable_main_cluster() {
    mkdir -p "$(dirname "$CREATECLUSTER_CONF")"
    if [[ -f $CREATECLUSTER_CONF ]] && grep -Eq '^[#[:space:]]*create_main_cluster' "$CREATECLUSTER_CONF"; then
        sed -Ei 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$CREATECLUSTER_CONF"
    else
        echo 'create_main_cluster = false' >>"$CREATECLUSTER_CONF"
    fi
}

# Keep packages from starting their services while apt-get runs (the prometheus package would
# start a Prometheus server on :9090): a policy-rc.d that denies every action (exit 101, the
# Debian convention) for the duration of the install, unless the system already has one.
# Returns 0 when it created the file (the caller removes it), 1 otherwise.
no_service_start() {
    [[ -e $POLICY_RC_D ]] && return 1
    printf '#!/bin/sh\n# install-system-deps.sh: no service starts during the install\nexit 101\n' >"$POLICY_RC_D"
    chmod 755 "$POLICY_RC_D"
}

main() {
    local -a missing=()
    have_jdk || missing+=(default-jdk-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    have_postgres_server || missing+=(postgresql)
    command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    [[ -x /usr/lib/chromium/chromium ]] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)

    if ((${#missing[@]} == 0)); then
        log "all present (java 17+, maven, postgresql server, runuser, promtool, chromium)"
        return 0
    fi

    if ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; then
        log "missing: ${missing[*]}"
        log "install them as root on Debian/Ubuntu, then re-run this script:"
        if [[ " ${missing[*]} " == *" postgresql "* ]]; then
            log "  sudo mkdir -p $(dirname "$CREATECLUSTER_CONF")"
            log "  echo 'create_main_cluster = false' | sudo tee -a $CREATECLUSTER_CONF"
        fi
        log "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        log "(elsewhere: a JDK 17+, Maven, PostgreSQL server binaries, runuser, Prometheus' promtool and Chromium from your package manager)"
        return 1
    fi

    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        disable_main_cluster
    fi

    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep our createcluster.conf should postgresql-common (via ucf) offer its own version.
    export UCF_FORCE_CONFFOLD=1
    if no_service_start; then
        trap 'rm -f "$POLICY_RC_D"' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"

    have_jdk || { log "java 17+ with javac still not found; check 'update-alternatives --config java'"; return 1; }
    have_postgres_server || { log "PostgreSQL server binaries still not found under /usr/lib/postgresql/*/bin"; return 1; }
    command -v promtool >/dev/null 2>&1 || { log "promtool still not found after installing prometheus"; return 1; }
    log "done"
}

main "$@"
