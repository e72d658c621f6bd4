# shellcheck shell=bash
# Installs the pinned end-to-end test tools, idempotently and quickly when already present:
#   tests/node_modules  from tests/package.json + tests/package-lock.json   (npm ci)
#   tests/.venv         from tests/requirements.txt                         (pip)
# Each install is skipped when a stamp (hash of its inputs and of the interpreter) is unchanged.
# Source this file, then call `flowlink_install_test_tools`; it exports
#   FLOWLINK_E2E_NODE_MODULES, FLOWLINK_E2E_PYTHON
# which the e2e tests (tests/src/lib.rs) read.

FLOWLINK_ROOT="${FLOWLINK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

flowlink_log() { printf '==> %s\n' "$*" >&2; }
flowlink_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

flowlink_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }

flowlink_pick_python() {
    local py
    for py in "${FLOWLINK_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$py" ] || continue
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

flowlink_install_node_tools() {
    local dir="$FLOWLINK_ROOT/tests" stamp want
    command -v node >/dev/null || flowlink_die "node is not installed (Node 20+ is needed for the e2e MCP servers)"
    command -v npm >/dev/null || flowlink_die "npm is not installed"
    stamp="$dir/node_modules/.flowlink-stamp"
    want="$(flowlink_hash "$dir/package.json" "$dir/package-lock.json")-$(node --version)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    flowlink_log "installing pinned npm test tools (npm ci in tests/)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
    printf '%s' "$want" >"$stamp"
}

flowlink_install_python_tools() {
    local dir="$FLOWLINK_ROOT/tests" venv stamp want py
    venv="$dir/.venv"
    py="$(flowlink_pick_python)" || flowlink_die "Python >= 3.10 with venv is needed for the e2e MCP client"
    stamp="$venv/.flowlink-stamp"
    want="$(flowlink_hash "$dir/requirements.txt")-$("$py" -c 'import sys; print(sys.version.split()[0])')"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ] || [ -f "$stamp" ]; then
        # New venv, or requirements/interpreter changed: start clean so nothing stale stays.
        flowlink_log "creating tests/.venv with $py"
        rm -rf "$venv"
        "$py" -m venv "$venv" >&2
    fi
    flowlink_log "installing pinned Python test tools (pip, tests/requirements.txt)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$dir/requirements.txt" >&2
    printf '%s' "$want" >"$stamp"
}

flowlink_install_test_tools() {
    flowlink_install_node_tools
    flowlink_install_python_tools
    export FLOWLINK_E2E_NODE_MODULES="$FLOWLINK_ROOT/tests/node_modules"
    export FLOWLINK_E2E_PYTHON="$FLOWLINK_ROOT/tests/.venv/bin/python"
}

# Fails unless the PostgreSQL server of URL accepts connections (pg_isready when present, else a
# TCP probe of its host and port).
flowlink_check_postgres() {
    local url="$1" rest hostport host port
    rest="${url#*://}"; rest="${rest#*@}"; hostport="${rest%%/*}"
    host="${hostport%:*}"; port="${hostport##*:}"
    [ "$host" = "$hostport" ] && port=5432
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port" -t 10 ||
            flowlink_die "PostgreSQL at $host:$port (FLOWLINK_TEST_POSTGRES_URL) does not accept connections; start it (e.g. pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)"
    elif ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        flowlink_die "PostgreSQL at $host:$port (FLOWLINK_TEST_POSTGRES_URL) is unreachable"
    fi
}
