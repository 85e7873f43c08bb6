//! Model serving: loading ONNX with `tract-onnx`, running it on JSON inputs,
//! and a cache of loaded models keyed by tenant, name and version.
//!
//! Loading and running are synchronous and CPU-bound; callers run them on a
//! blocking thread. Both catch panics from the runtime, so a hostile model or
//! input is an error, never a crashed worker.

#[cfg(feature = "cache")]
mod cache;
mod io;
pub mod onnx_builder;
pub mod package;
mod pool;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;

use fief_core::{ModelSignature, TensorSpec};

#[cfg(feature = "cache")]
pub use cache::{CacheStats, ModelCache};
pub use io::{Inputs, Outputs};
pub use pool::{PoolError, WorkerPool};

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The uploaded bytes are not a model we can run.
    #[error("not a loadable ONNX model: {0}")]
    InvalidModel(String),
    /// The request's inputs do not fit the model.
    #[error("{0}")]
    InvalidInput(String),
    /// The model failed while running on valid-looking input.
    #[error("model execution failed: {0}")]
    Execution(String),
}

pub type Result<T> = std::result::Result<T, ServingError>;

type Plan = Arc<TypedRunnableModel>;

/// A model ready to run.
pub struct LoadedModel {
    plan: Plan,
    signature: ModelSignature,
    input_types: Vec<DatumType>,
    input_shapes: Vec<Vec<Option<usize>>>,
    /// Size of the ONNX bytes it was loaded from; the cache's unit of cost.
    source_bytes: usize,
    /// Recent run time per input number, in nanoseconds (a moving
    /// average; 0 until the first run): what a run is expected to cost.
    nanos_per_element: AtomicU64,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Parses, type-checks and optimises an ONNX model.
    pub fn load(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(ServingError::InvalidModel("the body is empty".into()));
        }
        catch(|| Self::load_inner(bytes), ServingError::InvalidModel)
    }

    fn load_inner(bytes: &[u8]) -> Result<Self> {
        // The outermost message only: the chain below it is the ONNX
        // parser's internals (protobuf fields, tract's graph), no help to
        // whoever uploaded the file.
        let invalid = |e: TractError| ServingError::InvalidModel(format!("{e}"));
        let mut reader = bytes;
        let model = tract_onnx::onnx()
            .model_for_read(&mut reader)
            .map_err(|_| {
                ServingError::InvalidModel(
                    "the body does not parse as ONNX; send the .onnx file \
                 itself as application/octet-stream, or a .tar.gz package (model.onnx and an \
                 optional model.json) as application/gzip"
                        .into(),
                )
            })?;
        let plan = model
            .into_optimized()
            .map_err(invalid)?
            .into_runnable()
            .map_err(invalid)?;
        let typed = plan.model();
        let mut signature = ModelSignature::default();
        let mut input_types = Vec::new();
        let mut input_shapes = Vec::new();
        for (ix, outlet) in typed.input_outlets().map_err(invalid)?.iter().enumerate() {
            let fact = typed.input_fact(ix).map_err(invalid)?;
            input_types.push(fact.datum_type);
            input_shapes.push(
                fact.shape
                    .iter()
                    .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
                    .collect(),
            );
            signature
                .inputs
                .push(spec(typed.node(outlet.node).name.clone(), fact));
        }
        for (ix, outlet) in typed.output_outlets().map_err(invalid)?.iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(invalid)?;
            let name = typed
                .outlet_label(*outlet)
                .map(str::to_owned)
                .unwrap_or_else(|| typed.node(outlet.node).name.clone());
            signature.outputs.push(spec(name, fact));
        }
        if signature.inputs.is_empty() || signature.outputs.is_empty() {
            return Err(ServingError::InvalidModel(
                "the model has no inputs or no outputs".into(),
            ));
        }
        for (spec, dt) in signature.inputs.iter().zip(&input_types) {
            if !io::SUPPORTED_INPUT_TYPES.contains(dt) {
                return Err(ServingError::InvalidModel(format!(
                    "input {} has type {}, but JSON invocation supports f32, f64, i32 and i64",
                    spec.name, spec.dtype
                )));
            }
        }
        Ok(Self {
            plan,
            signature,
            input_types,
            input_shapes,
            source_bytes: bytes.len(),
            nanos_per_element: AtomicU64::new(0),
        })
    }

    /// What a run on `inputs` is expected to take, from the model's recent
    /// runs; `None` before it has run.
    pub fn expected_micros(&self, inputs: &Inputs) -> Option<f64> {
        let per = self.nanos_per_element.load(Ordering::Relaxed);
        (per > 0).then(|| per as f64 * inputs.elements().max(1) as f64 / 1000.0)
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    pub fn source_bytes(&self) -> usize {
        self.source_bytes
    }

    /// Runs the model on decoded inputs.
    pub fn run(&self, inputs: &Inputs) -> Result<Outputs> {
        let started = Instant::now();
        let out = self.run_inner(inputs);
        let per = u64::try_from(started.elapsed().as_nanos() / inputs.elements().max(1) as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.nanos_per_element.load(Ordering::Relaxed);
        let avg = if old == 0 { per } else { (old * 7 + per) / 8 };
        self.nanos_per_element.store(avg, Ordering::Relaxed);
        out
    }

    fn run_inner(&self, inputs: &Inputs) -> Result<Outputs> {
        let tensors = inputs.to_tensors(&self.signature, &self.input_types, &self.input_shapes)?;
        catch(
            || {
                let values: TVec<TValue> = tensors.into_iter().map(TValue::from).collect();
                let outputs = self
                    .plan
                    .run(values)
                    .map_err(|e| ServingError::Execution(format!("{e:#}")))?;
                Outputs::from_tensors(&self.signature, &outputs)
            },
            ServingError::Execution,
        )
    }
}

fn spec(name: String, fact: &TypedFact) -> TensorSpec {
    TensorSpec {
        name,
        dtype: format!("{:?}", fact.datum_type).to_lowercase(),
        shape: fact.shape.iter().map(|d| d.to_string()).collect(),
    }
}

/// Runs `f`, turning a panic inside the runtime into an error.
fn catch<T>(f: impl FnOnce() -> Result<T>, wrap: fn(String) -> ServingError) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the runtime panicked".into());
            Err(wrap(msg))
        }
    }
}
