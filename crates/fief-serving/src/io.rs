//! JSON <-> tensor conversion for the SageMaker-style invocation body:
//! `{"inputs": [[...]]}` (one input) or `{"inputs": {"name": [[...]]}}`,
//! answered with `{"outputs": {"name": [[...]]}}`.

use serde_json::{Map, Value};
use tract_onnx::prelude::*;

use fief_core::ModelSignature;

use crate::{Result, ServingError};

pub(crate) const SUPPORTED_INPUT_TYPES: &[DatumType] = &[
    DatumType::F32,
    DatumType::F64,
    DatumType::I32,
    DatumType::I64,
];

/// Tensors deeper than this are refused; no model input needs more.
const MAX_RANK: usize = 8;

/// One rectangular array of numbers, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
struct Array {
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// Decoded request inputs, not yet matched to a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Single(ArrayInput),
    Named(Vec<(String, ArrayInput)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArrayInput(Array);

impl Inputs {
    /// How many numbers the inputs hold (what a run's cost grows with).
    pub fn elements(&self) -> usize {
        match self {
            Inputs::Single(a) => a.0.values.len(),
            Inputs::Named(n) => n.iter().map(|(_, a)| a.0.values.len()).sum(),
        }
    }

    /// Decodes the value of the `inputs` field.
    pub fn from_json(v: &Value) -> Result<Self> {
        match v {
            Value::Object(map) => {
                if map.is_empty() {
                    return Err(invalid("`inputs` names no input"));
                }
                let named = map
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            ArrayInput(
                                array(v).map_err(|e| invalid(&format!("input {k:?}: {e}")))?,
                            ),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Inputs::Named(named))
            }
            Value::Array(_) => Ok(Inputs::Single(ArrayInput(
                array(v).map_err(|e| invalid(&format!("`inputs`: {e}")))?,
            ))),
            _ => Err(invalid(
                "`inputs` must be a nested array of numbers or an object of them by input name",
            )),
        }
    }

    pub(crate) fn to_tensors(
        &self,
        sig: &ModelSignature,
        types: &[DatumType],
        shapes: &[Vec<Option<usize>>],
    ) -> Result<Vec<Tensor>> {
        let ordered: Vec<&Array> = match self {
            Inputs::Single(a) => {
                if sig.inputs.len() != 1 {
                    let names: Vec<&str> = sig.inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(invalid(&format!(
                        "the model has {} inputs ({}); pass them by name",
                        names.len(),
                        names.join(", ")
                    )));
                }
                vec![&a.0]
            }
            Inputs::Named(named) => {
                if let Some((unknown, _)) = named
                    .iter()
                    .find(|(n, _)| !sig.inputs.iter().any(|i| &i.name == n))
                {
                    return Err(invalid(&format!(
                        "the model has no input named {unknown:?}"
                    )));
                }
                sig.inputs
                    .iter()
                    .map(|spec| {
                        named
                            .iter()
                            .find(|(n, _)| *n == spec.name)
                            .map(|(_, a)| &a.0)
                            .ok_or_else(|| invalid(&format!("missing input {:?}", spec.name)))
                    })
                    .collect::<Result<_>>()?
            }
        };
        ordered
            .into_iter()
            .zip(sig.inputs.iter().zip(types.iter().zip(shapes)))
            .map(|(a, (spec, (dt, expected)))| {
                let fits = a.shape.len() == expected.len()
                    && a.shape
                        .iter()
                        .zip(expected)
                        .all(|(got, want)| want.is_none_or(|w| w == *got));
                if !fits {
                    return Err(invalid(&format!(
                        "input {:?} has shape {:?}; the model expects [{}]",
                        spec.name,
                        a.shape,
                        spec.shape.join(", ")
                    )));
                }
                to_tensor(a, *dt).map_err(|e| invalid(&format!("input {:?}: {e}", spec.name)))
            })
            .collect()
    }
}

fn invalid(msg: &str) -> ServingError {
    ServingError::InvalidInput(msg.to_owned())
}

fn to_tensor(a: &Array, dt: DatumType) -> std::result::Result<Tensor, String> {
    let err = |e: TractError| e.to_string();
    match dt {
        DatumType::F32 => {
            let v: Vec<f32> = a.values.iter().map(|x| *x as f32).collect();
            Tensor::from_shape(&a.shape, &v).map_err(err)
        }
        DatumType::F64 => Tensor::from_shape(&a.shape, &a.values).map_err(err),
        DatumType::I64 => {
            let v = integers(&a.values, i64::MIN as f64, i64::MAX as f64)?;
            Tensor::from_shape(&a.shape, &v).map_err(err)
        }
        DatumType::I32 => {
            let v: Vec<i32> = integers(&a.values, f64::from(i32::MIN), f64::from(i32::MAX))?
                .into_iter()
                .map(|x| x as i32)
                .collect();
            Tensor::from_shape(&a.shape, &v).map_err(err)
        }
        other => Err(format!("unsupported input type {other:?}")),
    }
}

fn integers(values: &[f64], min: f64, max: f64) -> std::result::Result<Vec<i64>, String> {
    values
        .iter()
        .map(|x| {
            if x.fract() == 0.0 && *x >= min && *x <= max {
                Ok(*x as i64)
            } else {
                Err(format!("{x} is not an integer in range"))
            }
        })
        .collect()
}

/// Walks a nested JSON array, checking that it is rectangular and numeric.
fn array(v: &Value) -> std::result::Result<Array, String> {
    let mut shape = Vec::new();
    let mut cursor = v;
    while let Value::Array(items) = cursor {
        if shape.len() == MAX_RANK {
            return Err(format!("more than {MAX_RANK} dimensions"));
        }
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    let mut values = Vec::with_capacity(shape.iter().product());
    collect(v, &shape, &mut values)?;
    Ok(Array { shape, values })
}

fn collect(v: &Value, shape: &[usize], out: &mut Vec<f64>) -> std::result::Result<(), String> {
    match (v, shape.split_first()) {
        (Value::Array(items), Some((len, rest))) if items.len() == *len => {
            items.iter().try_for_each(|item| collect(item, rest, out))
        }
        (Value::Array(_), Some(_)) => {
            Err("rows of different lengths (the array must be rectangular)".into())
        }
        (Value::Number(n), None) => {
            out.push(n.as_f64().ok_or("a number out of range")?);
            Ok(())
        }
        (Value::Number(_), Some(_)) | (Value::Array(_), None) => {
            Err("mixed nesting depths (the array must be rectangular)".into())
        }
        _ => Err("only numbers and arrays of numbers are allowed".into()),
    }
}

/// Model outputs by name, as nested JSON arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs(pub Map<String, Value>);

impl Outputs {
    pub(crate) fn from_tensors(sig: &ModelSignature, values: &[TValue]) -> Result<Self> {
        let mut map = Map::new();
        for (spec, value) in sig.outputs.iter().zip(values) {
            let json = tensor_json(value)
                .map_err(|e| ServingError::Execution(format!("output {}: {e}", spec.name)))?;
            map.insert(spec.name.clone(), json);
        }
        Ok(Outputs(map))
    }
}

fn tensor_json(t: &Tensor) -> std::result::Result<Value, String> {
    let err = |e: TractError| e.to_string();
    let flat: Vec<Value> = match t.datum_type() {
        DatumType::F64 => t
            .to_plain_array_view::<f64>()
            .map_err(err)?
            .iter()
            .map(|x| Value::from(*x))
            .collect(),
        DatumType::I64
        | DatumType::I32
        | DatumType::I16
        | DatumType::I8
        | DatumType::U8
        | DatumType::U16
        | DatumType::U32 => {
            let c = t.cast_to::<i64>().map_err(err)?;
            c.to_plain_array_view::<i64>()
                .map_err(err)?
                .iter()
                .map(|x| Value::from(*x))
                .collect()
        }
        DatumType::Bool => t
            .to_plain_array_view::<bool>()
            .map_err(err)?
            .iter()
            .map(|x| Value::from(*x))
            .collect(),
        _ => {
            let c = t.cast_to::<f32>().map_err(err)?;
            c.to_plain_array_view::<f32>()
                .map_err(err)?
                .iter()
                .map(|x| Value::from(*x))
                .collect()
        }
    };
    Ok(nest(&flat, t.shape()))
}

fn nest(flat: &[Value], shape: &[usize]) -> Value {
    match shape.split_first() {
        None => flat.first().cloned().unwrap_or(Value::Null),
        Some((_, rest)) => {
            let stride: usize = rest.iter().product();
            if stride == 0 {
                return Value::Array(Vec::new());
            }
            Value::Array(flat.chunks(stride).map(|c| nest(c, rest)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_must_be_rectangular_numbers() {
        assert_eq!(array(&json!([[1, 2], [3, 4]])).unwrap().shape, vec![2, 2]);
        assert_eq!(array(&json!([])).unwrap().shape, vec![0]);
        for bad in [
            json!([[1, 2], [3]]),
            json!([1, [2]]),
            json!([["a"]]),
            json!([[1], 2]),
            json!([null]),
        ] {
            assert!(array(&bad).is_err(), "{bad}");
        }
        let deep = (0..10).fold(json!(1), |acc, _| json!([acc]));
        assert!(array(&deep).is_err());
    }

    #[test]
    fn nesting_roundtrip() {
        let flat: Vec<Value> = (0..6).map(Value::from).collect();
        assert_eq!(nest(&flat, &[2, 3]), json!([[0, 1, 2], [3, 4, 5]]));
        assert_eq!(nest(&flat[..1], &[]), json!(0));
    }
}
