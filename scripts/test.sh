#!/usr/bin/env bash
# The README's test command: installs the independent ONNX runtime the
# reference test compares against (onnxruntime, from PyPI), the official
# openai and boto3 SDKs the foundation-model tests drive fief with,
# schemathesis for the OpenAPI contract, a local S3-compatible server (moto)
# for the S3 log sink, the consoles' npm packages and Debian's chromium; then
# runs every test of the workspace, the browser test of the consoles, the
# contract check, and the gateway's suites again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import onnxruntime, numpy, openai, boto3, schemathesis, openapi_spec_validator" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check onnxruntime numpy openai boto3 \
        schemathesis openapi-spec-validator
fi
bash scripts/setup-embedder.sh

# A local S3-compatible server for the S3 log-sink test (moto, from PyPI),
# unless FIEF_TEST_S3_URL names one already. Stopped when this script ends.
if [[ -z "${FIEF_TEST_S3_URL:-}" ]]; then
    if ! python3 -c "import moto.server, flask, flask_cors" 2>/dev/null; then
        python3 -m pip install --quiet --disable-pip-version-check "moto[s3]" flask flask-cors
    fi
    s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 &
    s3_pid=$!
    trap 'kill "$s3_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 1 60); do
        curl -fs "http://127.0.0.1:$s3_port/" >/dev/null 2>&1 && break
        sleep 0.5
    done
    export FIEF_TEST_S3_URL="http://127.0.0.1:$s3_port"
fi

# Each phase prints its time, so a CI log's tail says where the time went.
phase() {
    local name="$1" t0=$SECONDS
    shift
    "$@"
    echo "-- test.sh $name: $((SECONDS - t0)) s"
}
# The consoles' committed build must be what their sources build to (npm
# ci from the lock file, then Vite): the binary embeds that build.
phase "console build check" bash scripts/console.sh --check

phase "cargo test (SQLite)" cargo test --workspace --locked "$@"

# The consoles in a real browser: Debian's chromium, driven by
# playwright-core (installed by console.sh's npm ci); screenshots of every
# page go to target/console-screenshots.
if [[ ! -x /usr/bin/chromium ]]; then
    phase "install chromium" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'
fi
phase "console browser test" node crates/fief-console/web/tests/browser.mjs target/debug/fief

# The OpenAPI contract against a live server (the fief binary the tests
# built): no 5xx, no response outside the document.
phase "schemathesis" bash scripts/schemathesis.sh target/debug/fief

# The vector index's requirement, as the README states it: recall@10 >= 0.95
# at the default beam on 100,000 random 384-d vectors (about 3 minutes; the
# bench exits non-zero below it).
phase "recall bench" cargo bench --locked -p fief-retrieval --bench recall

# The gateway's suites again with every row on PostgreSQL: each test server
# gets a throwaway database and a NOBYPASSRLS runtime role from
# FIEF_TEST_DATABASE_URL (tests/common/pg.rs). Required under CI=true.
if [[ -n "${FIEF_TEST_DATABASE_URL:-}" || "${CI:-}" == true ]]; then
    # --workspace (not -p fief-server): the same features as the pass above,
    # so these run from its build instead of compiling the tree again.
    FIEF_TEST_STORE=postgres phase "PostgreSQL pass" cargo test --locked --workspace \
        --test isolation --test identity --test knowledge --test proptest_isolation \
        --test hostile_catalogue --test islands --test lifecycle --test llm --test quotas --test metering "$@"
    # The isolation suite and the property test once more, every gateway of
    # them three replicas on one PostgreSQL and one bucket behind a
    # per-request round-robin balancer (tests/common/mod.rs::behind_a_balancer).
    FIEF_TEST_STORE=postgres FIEF_TEST_REPLICAS=3 phase "replicas pass" cargo test --locked --workspace \
        --test isolation --test proptest_isolation "$@"
else
    echo "SKIP: the PostgreSQL pass needs FIEF_TEST_DATABASE_URL"
fi
