#!/usr/bin/env bash
# Builds the consoles (crates/fief-console/web, Vite + TypeScript from npm)
# into crates/fief-console/dist, which is committed and embedded in the
# binary at compile time, so `cargo build` needs no node.
#   bash scripts/console.sh           # rebuild dist/ (commit it)
#   bash scripts/console.sh --check   # what scripts/test.sh runs: build
#                                     # elsewhere and fail if dist/ differs
set -euo pipefail
cd "$(dirname "$0")/../crates/fief-console/web"
npm ci --no-audit --no-fund --loglevel=error
npx tsc --noEmit
if [[ "${1:-}" == --check ]]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    npx vite build --logLevel error --outDir "$out" --emptyOutDir
    if ! diff -r "$out" ../dist; then
        echo "FAILED: crates/fief-console/dist is not what web/ builds to: run bash scripts/console.sh and commit dist/"
        exit 1
    fi
    echo "crates/fief-console/dist is what web/ builds to"
else
    npx vite build --logLevel error
    echo "consoles built into crates/fief-console/dist"
fi
