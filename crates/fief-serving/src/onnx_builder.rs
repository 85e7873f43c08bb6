//! Builds small ONNX models in code: dense layers (MatMul + Add, optional
//! Relu) with a symbolic batch dimension. Used by `fief demo`, the tests and
//! the benchmark, so each tenant can get its own weights and a wrong-tenant
//! answer is detectable. [`Mlp::reference`] computes the same function with
//! plain loops, independently of any ONNX runtime.

use prost::Message;
use tract_onnx::pb;

#[derive(Debug, Clone)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major `[inputs, outputs]`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub relu: bool,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub layers: Vec<Dense>,
    pub input_name: String,
    pub output_name: String,
}

impl Mlp {
    /// Layers of the given widths (`[4, 8, 3]` = 4 inputs, a hidden layer of
    /// 8 with Relu, 3 outputs), weights drawn from a seeded generator.
    pub fn seeded(widths: &[usize], seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Dense {
                inputs: w[0],
                outputs: w[1],
                weights: (0..w[0] * w[1]).map(|_| rng.next_f32()).collect(),
                bias: (0..w[1]).map(|_| rng.next_f32()).collect(),
                relu: i + 2 < widths.len(),
            })
            .collect();
        Self {
            layers,
            input_name: "input".into(),
            output_name: "output".into(),
        }
    }

    pub fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// The ONNX encoding of this network.
    pub fn to_onnx(&self) -> Vec<u8> {
        let mut nodes = Vec::new();
        let mut initializers = Vec::new();
        let mut current = self.input_name.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = (format!("w{i}"), format!("b{i}"));
            initializers.push(float_tensor(
                &w,
                &[layer.inputs, layer.outputs],
                &layer.weights,
            ));
            initializers.push(float_tensor(&b, &[layer.outputs], &layer.bias));
            let last = i + 1 == self.layers.len();
            let matmul_out = format!("mm{i}");
            let add_out = if last && !layer.relu {
                self.output_name.clone()
            } else {
                format!("add{i}")
            };
            nodes.push(node("MatMul", &[&current, &w], &matmul_out));
            nodes.push(node("Add", &[&matmul_out, &b], &add_out));
            current = add_out;
            if layer.relu {
                let relu_out = if last {
                    self.output_name.clone()
                } else {
                    format!("relu{i}")
                };
                nodes.push(node("Relu", &[&current], &relu_out));
                current = relu_out;
            }
        }
        let out_width = self.layers.last().map_or(0, |l| l.outputs);
        let graph = pb::GraphProto {
            name: "fief-mlp".into(),
            node: nodes,
            initializer: initializers,
            input: vec![value_info(&self.input_name, self.input_width())],
            output: vec![value_info(&self.output_name, out_width)],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            producer_name: "fief".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    /// The network's output for a batch of rows, computed with plain loops.
    pub fn reference(&self, batch: &[Vec<f32>]) -> Vec<Vec<f32>> {
        batch
            .iter()
            .map(|row| {
                self.layers.iter().fold(row.clone(), |x, layer| {
                    (0..layer.outputs)
                        .map(|o| {
                            let sum: f32 = (0..layer.inputs)
                                .map(|i| x[i] * layer.weights[i * layer.outputs + o])
                                .sum();
                            let y = sum + layer.bias[o];
                            if layer.relu {
                                y.max(0.0)
                            } else {
                                y
                            }
                        })
                        .collect()
                })
            })
            .collect()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

/// A float tensor of shape `[batch, width]`, the batch symbolic.
fn value_info(name: &str, width: usize) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    let dim = |v| Dimension {
        value: Some(v),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(Dim::DimParam("batch".into())),
                        dim(Dim::DimValue(width as i64)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tiny deterministic generator (SplitMix64), so seeded models are the
/// same on every machine without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Inputs, LoadedModel};

    #[test]
    fn tract_matches_the_reference() {
        let mlp = Mlp::seeded(&[4, 8, 3], 7);
        let model = LoadedModel::load(&mlp.to_onnx()).unwrap();
        assert_eq!(model.signature().inputs[0].name, "input");
        assert_eq!(model.signature().outputs[0].name, "output");
        let batch = vec![vec![0.5, -1.0, 2.0, 0.25], vec![1.0, 1.0, 1.0, 1.0]];
        let inputs = Inputs::from_json(&serde_json::json!(batch)).unwrap();
        let out = model.run(&inputs).unwrap();
        let got: Vec<Vec<f32>> = serde_json::from_value(out.0["output"].clone()).unwrap();
        let want = mlp.reference(&batch);
        assert_eq!(got.len(), want.len(), "rows");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.len(), w.len()), (3, 3), "row length");
            for (g, w) in g.iter().zip(w) {
                assert!((g - w).abs() < 1e-4, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn garbage_and_bad_inputs_are_errors() {
        assert!(LoadedModel::load(b"").is_err());
        assert!(LoadedModel::load(b"definitely not onnx").is_err());
        let onnx = Mlp::seeded(&[4, 3], 1).to_onnx();
        assert!(LoadedModel::load(&onnx[..onnx.len() / 2]).is_err());
        let model = LoadedModel::load(&onnx).unwrap();
        for bad in [
            serde_json::json!([[1.0, 2.0]]),
            serde_json::json!([1, 2, 3, 4]),
            serde_json::json!({"x": [[1, 2, 3, 4]]}),
        ] {
            let inputs = Inputs::from_json(&bad).unwrap();
            assert!(
                matches!(
                    model.run(&inputs),
                    Err(crate::ServingError::InvalidInput(_))
                ),
                "{bad}"
            );
        }
    }
}
