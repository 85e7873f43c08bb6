#!/usr/bin/env python3
"""Reference embeddings: tokenizers + onnxruntime on the ONNX built by build_onnx.py.
usage: embed_ort.py MODEL_DIR MODEL.onnx"""
import sys, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
model_dir, onnx_path = sys.argv[1], sys.argv[2]
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
# tokenizer.json ships truncation=128 + padding Fixed(128); sentence-transformers uses max_seq_length=256
tok.enable_truncation(max_length=256)
tok.enable_padding(pad_id=0, pad_token="[PAD]")          # pad to longest in batch
sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])

def embed(texts):
    enc = tok.encode_batch(texts)
    feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}
    lhs, emb = sess.run(["last_hidden_state", "sentence_embedding"], feed)
    # same pooling done by hand, to cross-check the in-graph pooling
    m = feed["attention_mask"][..., None].astype(np.float32)
    mean = (lhs * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    manual = mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
    assert np.allclose(manual, emb, atol=1e-6), np.abs(manual - emb).max()
    return enc, emb

S = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew by ten percent."]
enc, E = embed(S)
for s, e, v in zip(S, enc, E):
    print(repr(s)); print("  ids", [i for i, a in zip(e.ids, e.attention_mask) if a]); print("  first5", np.round(v[:5], 6).tolist(), "norm", float(np.linalg.norm(v)))
C = E @ E.T
print("cosine: cat~feline %.6f  cat~revenue %.6f  feline~revenue %.6f" % (C[0, 1], C[0, 2], C[1, 2]))
# batch-vs-single invariance (padding must not change the result)
single = np.stack([embed([s])[1][0] for s in S])
print("max |batched - single| =", float(np.abs(single - E).max()))
np.save("out/ref_embeddings.npy", E)
