#!/usr/bin/env python3
"""Runs an ONNX model with onnxruntime: an independent runtime that the
gateway's answers are checked against (crates/fief-server/tests/reference_runtime.rs).

usage: onnx_reference.py MODEL.onnx INPUTS.json
INPUTS.json maps input names to nested arrays; prints outputs the same way."""
import json
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    model, inputs_path = sys.argv[1], sys.argv[2]
    with open(inputs_path) as f:
        inputs = json.load(f)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    json.dump({n: r.tolist() for n, r in zip(names, results)}, sys.stdout)


if __name__ == "__main__":
    main()
