# Independent float64 numpy forward pass of all-MiniLM-L6-v2 straight from model.safetensors
# (no ONNX) -- used to validate the generated ONNX graph; optional tract-style erf approximation.
import sys, math, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
md, onnx_path = sys.argv[1], sys.argv[2]
W = {k: v.astype(np.float64) for k, v in load_file(f"{md}/model.safetensors").items() if v.dtype == np.float32}
erf_exact = np.vectorize(math.erf)
def erf_tract(x):  # tract-onnx erf_f32 (Abramowitz-Stegun 7.1.28)
    a = [0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672, 0.0000430638]
    s, x = np.sign(x), np.abs(x); y = a[5] * x
    for c in a[4::-1]: y = (c + y) * x
    return s * (1 - (y + 1) ** -16)
def ln(x, p): mu = x.mean(-1, keepdims=True); v = ((x - mu) ** 2).mean(-1, keepdims=True); return (x - mu) / np.sqrt(v + 1e-12) * W[p + ".weight"] + W[p + ".bias"]
def lin(x, p): return x @ W[p + ".weight"].T + W[p + ".bias"]
def embed(ids, mask, erf):
    B, S = ids.shape
    x = ln(W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:S] + W["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    ext = (1 - mask[:, None, None, :]) * -1e30
    for i in range(6):
        p = f"encoder.layer.{i}."
        sh = lambda t: t.reshape(B, S, 12, 32).transpose(0, 2, 1, 3)
        q, k, v = (sh(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(32) + ext
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        c = (s @ v).transpose(0, 2, 1, 3).reshape(B, S, 384)
        x = ln(lin(c, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense"); h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    m = mask[..., None]; e = (x * m).sum(1) / m.sum(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)
tok = Tokenizer.from_file(f"{md}/tokenizer.json"); tok.enable_truncation(max_length=256); tok.enable_padding()
S = ["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew by ten percent."]
enc = tok.encode_batch(S)
ids = np.array([e.ids for e in enc]); mask = np.array([e.attention_mask for e in enc], np.float64)
ref = embed(ids, mask, erf_exact); approx = embed(ids, mask, erf_tract)
import onnxruntime as ort
o = ort.InferenceSession(onnx_path).run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask.astype(np.int64), "token_type_ids": np.zeros_like(ids)})[0]
print("max|onnx(f32) - numpy(f64)| =", np.abs(o - ref).max())
print("max|numpy tract-erf - exact erf| =", np.abs(approx - ref).max(), " min cos =", (approx * ref).sum(1).min())
