#!/usr/bin/env bash
# The OpenAPI contract, checked against a live server: schemathesis (PyPI)
# generates requests from each listener's /openapi.json and sends them with
# a tenant's key (data listener) and with the admin token (admin listener).
# Any 5xx or any response that violates the document fails the run.
#   bash scripts/schemathesis.sh [path/to/fief] [examples per operation]
set -euo pipefail
cd "$(dirname "$0")/.."
fief="${1:-target/debug/fief}"
examples="${2:-${FIEF_SCHEMATHESIS_EXAMPLES:-15}}"
if ! python3 -c "import schemathesis, openapi_spec_validator" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check schemathesis openapi-spec-validator
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir="$(mktemp -d)"
data_port=$(free_port)
admin_port=$(free_port)
token="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
FIEF_ADMIN_TOKEN="$token" "$fief" serve --listen "127.0.0.1:$data_port" \
    --admin-listen "127.0.0.1:$admin_port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
data="http://127.0.0.1:$data_port"
admin="http://127.0.0.1:$admin_port"
for _ in $(seq 1 100); do
    curl -fs "$admin/healthz" >/dev/null 2>&1 && curl -fs "$data/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
key=$(curl -fs -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"id": "contract", "tier": "pool"}' "$admin/admin/v1/tenants" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')

status=0
for plane in data admin; do
    if [[ $plane == data ]]; then url=$data; cred=$key; else url=$admin; cred=$token; fi
    curl -fs "$url/openapi.json" >"$dir/$plane.json"
    echo "== $plane: the document validates as OpenAPI 3.1"
    python3 -c 'import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print("valid")' "$dir/$plane.json"
    echo "== $plane: schemathesis, $examples examples per operation"
    # Offboarding the one tenant or rotating keys would only turn later
    # requests into 401s; the contract is checked on them all the same.
    # Starting verify-isolation is left out: it would run its probe in the
    # background of the rest (crates/fief-cli/tests/verify_isolation.rs
    # checks that route; its GET is checked here).
    if ! python3 -m schemathesis.cli run "$url/openapi.json" \
        --exclude-operation-id run_verify_isolation \
        --header "Authorization: Bearer $cred" \
        --checks not_a_server_error,response_schema_conformance \
        --max-examples "$examples" --seed 20261204 --workers 1 \
        --phases examples,coverage,fuzzing --generation-database none \
        --request-timeout 30 --no-color; then
        status=1
    fi
done
if [[ $status -ne 0 ]]; then
    echo "FAILED: schemathesis found server errors or schema violations; the server's log:"
    tail -n 60 "$dir/server.log"
fi
exit $status
