#!/usr/bin/env bash
# Azurite (npm `azurite`), the Azure Blob emulator the Azure store's tests run against.
#
# Sourced by .ci/test; defines `ensure_azurite`, which installs Azurite into target/ci/node_modules
# when it is missing, starts its blob service in memory on a free port, waits until it answers,
# exports ASSETGC_TEST_AZURITE_ENDPOINT (http://127.0.0.1:PORT/devstoreaccount1, the well-known
# development account) and records the server's pid in target/ci/azurite.pid. An endpoint that is
# already set is checked as given and its server left alone. On failure it prints one line and
# returns 1.

# Pinned by major version: the blob service's flags and the dev account are stable across 3.x.
AZURITE_PACKAGE=${AZURITE_PACKAGE:-azurite@3}

ensure_azurite() {
    local ci_dir root wait=${WAIT_SECONDS:-30}
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ci_dir="$root/target/ci"

    _azurite_fail() {
        printf '.ci/test: %s\n' "$*" >&2
        return 1
    }
    # Any HTTP answer will do: without a signature Azurite answers 403, which still means it is up.
    _azurite_answers() {
        local code
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1?comp=list" 2>/dev/null) || return 1
        [[ "$code" != 000 ]]
    }
    _azurite_wait() {
        local deadline=$((SECONDS + wait))
        until _azurite_answers "$1"; do
            ((SECONDS < deadline)) || return 1
            sleep 0.5
        done
    }

    command -v curl >/dev/null || { _azurite_fail "curl is not installed; it is needed to check Azurite"; return 1; }

    if [[ -n "${ASSETGC_TEST_AZURITE_ENDPOINT:-}" ]]; then
        _azurite_wait "$ASSETGC_TEST_AZURITE_ENDPOINT" ||
            { _azurite_fail "Azurite at ASSETGC_TEST_AZURITE_ENDPOINT ($ASSETGC_TEST_AZURITE_ENDPOINT) does not answer (checked for ${wait}s)"; return 1; }
        return 0
    fi

    command -v node >/dev/null && command -v npm >/dev/null ||
        { _azurite_fail "node and npm are needed to run Azurite (apt-get install nodejs npm)"; return 1; }

    local bin="$ci_dir/node_modules/.bin/azurite-blob"
    if [[ ! -x "$bin" ]]; then
        mkdir -p "$ci_dir"
        [[ -f "$ci_dir/package.json" ]] || printf '{ "name": "assetgc-ci", "private": true }\n' >"$ci_dir/package.json"
        printf '.ci/test: installing %s into target/ci/node_modules\n' "$AZURITE_PACKAGE" >&2
        npm install --prefix "$ci_dir" --no-audit --no-fund --silent "$AZURITE_PACKAGE" >"$ci_dir/npm-azurite.log" 2>&1 ||
            { _azurite_fail "npm install $AZURITE_PACKAGE failed (see target/ci/npm-azurite.log)"; return 1; }
        [[ -x "$bin" ]] || { _azurite_fail "npm installed $AZURITE_PACKAGE but there is no $bin"; return 1; }
    fi

    # A server left by an earlier run is stopped, so each run starts empty.
    if [[ -f "$ci_dir/azurite.pid" ]]; then
        kill "$(cat "$ci_dir/azurite.pid")" 2>/dev/null || true
        rm -f "$ci_dir/azurite.pid"
    fi

    local port
    port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})') ||
        { _azurite_fail "could not find a free port for Azurite"; return 1; }
    # --skipApiVersionCheck: object_store may send a newer x-ms-version than this Azurite knows;
    # --loose: headers Azurite does not implement are ignored instead of refused.
    "$bin" --inMemoryPersistence --blobHost 127.0.0.1 --blobPort "$port" \
        --skipApiVersionCheck --loose --silent >"$ci_dir/azurite.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$ci_dir/azurite.pid"

    local endpoint="http://127.0.0.1:$port/devstoreaccount1"
    if ! _azurite_wait "$endpoint"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$ci_dir/azurite.pid"
        _azurite_fail "Azurite did not answer on 127.0.0.1:$port within ${wait}s (see target/ci/azurite.log)"
        return 1
    fi
    export ASSETGC_TEST_AZURITE_ENDPOINT="$endpoint"
}
