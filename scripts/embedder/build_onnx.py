#!/usr/bin/env python3
"""Build an ONNX graph for sentence-transformers/all-MiniLM-L6-v2 directly from
the package's model.safetensors -- no torch needed (deps: numpy, onnx, safetensors).

Graph: BertModel (6 layers, 12 heads, hidden 384, exact-erf GELU, eps 1e-12)
       + masked mean pooling + L2 normalisation (sentence-transformers modules 0,1,2).

Inputs  (int64, [batch, seq]): input_ids, attention_mask, token_type_ids
Outputs: last_hidden_state float32 [batch, seq, 384]
         sentence_embedding float32 [batch, 384]   (already L2-normalised)

Only plain opset-13 ops that tract-onnx registers are used:
Gather Slice Add Sub Mul Div MatMul ReduceMean ReduceSum Sqrt Erf Softmax
Reshape Transpose Unsqueeze Cast Max Shape. No Constant nodes (initializers only),
no LayerNormalization (decomposed), no Range.

usage: build_onnx.py MODEL_DIR OUT.onnx
"""
import sys
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper
from safetensors.numpy import load_file

model_dir, out = sys.argv[1], sys.argv[2]
W = load_file(f"{model_dir}/model.safetensors")
H, NH, L, EPS = 384, 12, 6, 1e-12
HD = H // NH

nodes, inits = [], []
_n = [0]


def uid(p):
    _n[0] += 1
    return f"{p}_{_n[0]}"


def init(name, arr):
    inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    return name


def op(t, ins, name=None, **attrs):
    o = name or uid(t)
    nodes.append(helper.make_node(t, ins, [o], name=uid("n_" + t), **attrs))
    return o


# shared constants
init("c_one_f", np.array(1.0, np.float32))
init("c_neg_big", np.array(-3.4028234663852886e38, np.float32))  # torch.finfo(f32).min, as in transformers
init("c_eps", np.array(EPS, np.float32))
init("c_half", np.array(0.5, np.float32))
init("c_inv_sqrt2", np.array(1 / np.sqrt(2), np.float32))
init("c_scale", np.array(1 / np.sqrt(HD), np.float32))
init("c_axes_m1", np.array([-1], np.int64))
init("c_axes_1", np.array([1], np.int64))
init("c_axes_12", np.array([1, 2], np.int64))
init("c_min_count", np.array(1e-9, np.float32))
init("c_min_norm", np.array(1e-12, np.float32))
init("c_zero_i", np.array([0], np.int64))
init("c_two_i", np.array([2], np.int64))
init("c_split_heads", np.array([0, 0, NH, HD], np.int64))
init("c_merge_heads", np.array([0, 0, H], np.int64))


def layer_norm(x, prefix):
    g = init(prefix + ".weight", W[prefix + ".weight"])
    b = init(prefix + ".bias", W[prefix + ".bias"])
    mu = op("ReduceMean", [x], axes=[-1], keepdims=1)
    d = op("Sub", [x, mu])
    var = op("ReduceMean", [op("Mul", [d, d])], axes=[-1], keepdims=1)
    y = op("Div", [d, op("Sqrt", [op("Add", [var, "c_eps"])])])
    return op("Add", [op("Mul", [y, g]), b])


def linear(x, prefix):
    w = init(prefix + ".weight_t", W[prefix + ".weight"].T)  # [in, out]
    b = init(prefix + ".bias", W[prefix + ".bias"])
    return op("Add", [op("MatMul", [x, w]), b])


# ---- embeddings
word = init("embeddings.word_embeddings.weight", W["embeddings.word_embeddings.weight"])
pos = init("embeddings.position_embeddings.weight", W["embeddings.position_embeddings.weight"])
typ = init("embeddings.token_type_embeddings.weight", W["embeddings.token_type_embeddings.weight"])
seq_len = op("Slice", [op("Shape", ["input_ids"]), "c_axes_1", "c_two_i", "c_zero_i"])  # [S]
pos_emb = op("Slice", [pos, "c_zero_i", seq_len, "c_zero_i"])  # [S, H] (position_ids = 0..S-1)
e = op("Add", [op("Add", [op("Gather", [word, "input_ids"], axis=0), op("Gather", [typ, "token_type_ids"], axis=0)]), pos_emb])
x = layer_norm(e, "embeddings.LayerNorm")

# ---- extended attention mask: (1 - mask) * finfo.min, shape [B,1,1,S]
maskf = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
ext = op("Mul", [op("Sub", ["c_one_f", op("Unsqueeze", [maskf, "c_axes_12"])]), "c_neg_big"])


def heads(t):  # [B,S,H] -> [B,NH,S,HD]
    return op("Transpose", [op("Reshape", [t, "c_split_heads"])], perm=[0, 2, 1, 3])


for i in range(L):
    p = f"encoder.layer.{i}."
    q = heads(linear(x, p + "attention.self.query"))
    k = heads(linear(x, p + "attention.self.key"))
    v = heads(linear(x, p + "attention.self.value"))
    kt = op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = op("Add", [op("Mul", [op("MatMul", [q, kt]), "c_scale"]), ext])
    probs = op("Softmax", [scores], axis=-1)
    ctx = op("Transpose", [op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = op("Reshape", [ctx, "c_merge_heads"])
    a = linear(ctx, p + "attention.output.dense")
    x = layer_norm(op("Add", [a, x]), p + "attention.output.LayerNorm")
    h = linear(x, p + "intermediate.dense")
    h = op("Mul", [op("Mul", [h, "c_half"]), op("Add", ["c_one_f", op("Erf", [op("Mul", [h, "c_inv_sqrt2"])])])])
    o = linear(h, p + "output.dense")
    x = layer_norm(op("Add", [o, x]), p + "output.LayerNorm")

nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="out_lhs"))

# ---- mean pooling (sentence-transformers Pooling, mean_tokens) + Normalize
m3 = op("Unsqueeze", [maskf, "c_axes_m1"])  # [B,S,1]
summed = op("ReduceSum", [op("Mul", [x, m3]), "c_axes_1"], keepdims=0)  # [B,H]
count = op("Max", [op("ReduceSum", [m3, "c_axes_1"], keepdims=0), "c_min_count"])  # [B,1] clamp(min=1e-9)
mean = op("Div", [summed, count])
norm = op("Max", [op("Sqrt", [op("ReduceSum", [op("Mul", [mean, mean]), "c_axes_m1"], keepdims=1)]), "c_min_norm"])
nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="out_emb"))

I64, F32 = TensorProto.INT64, TensorProto.FLOAT
graph = helper.make_graph(
    nodes, "all-MiniLM-L6-v2",
    [helper.make_tensor_value_info(n, I64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")],
    [helper.make_tensor_value_info("last_hidden_state", F32, ["batch", "sequence", H]),
     helper.make_tensor_value_info("sentence_embedding", F32, ["batch", H])],
    inits,
)
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fief-build_onnx")
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, out)
print("wrote", out)
