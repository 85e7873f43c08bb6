#!/usr/bin/env bash
# The README's test command: installs the independent ONNX runtime the
# reference test compares against (onnxruntime, from PyPI), then runs every
# test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import onnxruntime, numpy" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check onnxruntime numpy
fi
bash scripts/setup-embedder.sh
cargo test --workspace --locked "$@"
