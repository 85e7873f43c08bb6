//! all-MiniLM-L6-v2 on tract: the ONNX graph from `build_onnx.py` already
//! does masked mean pooling and L2 normalisation (`sentence_embedding`).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::tokenizer::Tokenizer;
use crate::{EmbedError, DIM};

/// Texts per model run. Batches are padded to their longest member, so
/// small batches of similar lengths waste little work on padding.
const BATCH: usize = 16;

const OUTPUT: &str = "sentence_embedding";

/// Which tensor each model input takes.
#[derive(Debug, Clone, Copy)]
enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

/// The embedding model, loaded and optimised once, run from any thread.
pub struct MiniLm {
    tokenizer: Tokenizer,
    plan: Arc<TypedRunnableModel>,
    /// The model's inputs in its own order.
    feeds: Vec<Feed>,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("feeds", &self.feeds)
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads `model.onnx` and `vocab.txt` from `dir` (as written by
    /// `scripts/setup-embedder.sh`) and optimises the model for any batch
    /// size and sequence length.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let model_path = dir.join("model.onnx");
        let vocab_path = dir.join("vocab.txt");
        for missing in [&model_path, &vocab_path] {
            if !missing.is_file() {
                return Err(EmbedError::NotInstalled {
                    dir: dir.to_owned(),
                    missing: missing.clone(),
                });
            }
        }
        let tokenizer = Tokenizer::from_vocab_file(&vocab_path)?;
        let invalid = |reason: String| EmbedError::InvalidModel {
            path: model_path.clone(),
            reason,
        };
        let (plan, feeds) =
            catch(|| load_plan(&model_path).map_err(|e| format!("{e:#}"))).map_err(invalid)?;
        Ok(Self {
            tokenizer,
            plan,
            feeds,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// One unit vector of [`DIM`] floats per text, in order. Texts longer
    /// than [`crate::MAX_TOKENS`] word pieces are truncated (see [`crate::chunk`]).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encoded: Vec<Vec<i64>> = texts.iter().map(|t| self.tokenizer.encode(t).ids).collect();
        // Batch texts of similar length together to keep padding small.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let rows: Vec<&[i64]> = batch.iter().map(|&i| encoded[i].as_slice()).collect();
            let vectors = self.run(&rows)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn run(&self, rows: &[&[i64]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batch = rows.len();
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = vec![self.tokenizer.pad_id(); batch * seq];
        let mut mask = vec![0i64; batch * seq];
        for (r, row) in rows.iter().enumerate() {
            ids[r * seq..r * seq + row.len()].copy_from_slice(row);
            mask[r * seq..r * seq + row.len()].fill(1);
        }
        let types = vec![0i64; batch * seq];
        let failed = |e: TractError| EmbedError::Inference(format!("{e:#}"));
        let mut inputs: TVec<TValue> = TVec::new();
        for feed in &self.feeds {
            let data = match feed {
                Feed::InputIds => &ids,
                Feed::AttentionMask => &mask,
                Feed::TokenTypeIds => &types,
            };
            inputs.push(
                Tensor::from_shape(&[batch, seq], data)
                    .map_err(failed)?
                    .into(),
            );
        }
        let flat: Vec<f32> = catch(|| {
            let outputs = self.plan.run(inputs).map_err(|e| format!("{e:#}"))?;
            let out = outputs
                .first()
                .ok_or_else(|| "the model returned no output".to_owned())?;
            if out.shape() != [batch, DIM] {
                return Err(format!(
                    "expected a [{batch}, {DIM}] output, got {:?}",
                    out.shape()
                ));
            }
            let view = out
                .to_plain_array_view::<f32>()
                .map_err(|e| format!("{e:#}"))?;
            Ok(view.iter().copied().collect())
        })
        .map_err(EmbedError::Inference)?;
        flat.chunks(DIM).map(unit_vector).collect()
    }
}

/// Checks a model output row and re-normalises it (the graph normalises
/// already; this guards against drift and catches garbage).
fn unit_vector(row: &[f32]) -> Result<Vec<f32>, EmbedError> {
    if row.iter().any(|x| !x.is_finite()) {
        return Err(EmbedError::Inference(
            "the model produced a non-finite value".into(),
        ));
    }
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm < 1e-6 {
        return Err(EmbedError::Inference(
            "the model produced a zero vector".into(),
        ));
    }
    Ok(row.iter().map(|x| x / norm).collect())
}

fn load_plan(path: &Path) -> TractResult<(Arc<TypedRunnableModel>, Vec<Feed>)> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    // One symbolic batch and sequence dimension shared by all three inputs,
    // so a single optimised plan serves every batch shape.
    let batch = model.symbols.sym("batch");
    let seq = model.symbols.sym("sequence");
    let mut feeds = Vec::new();
    let input_names: Vec<String> = model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    for (ix, name) in input_names.iter().enumerate() {
        let feed = match name.as_str() {
            "input_ids" => Feed::InputIds,
            "attention_mask" => Feed::AttentionMask,
            "token_type_ids" => Feed::TokenTypeIds,
            other => return Err(TractError::msg(format!("unexpected model input {other:?}"))),
        };
        feeds.push(feed);
        model.set_input_fact(ix, i64::fact([batch.to_dim(), seq.to_dim()]).into())?;
    }
    if feeds.len() != 3 {
        return Err(TractError::msg(format!(
            "expected 3 inputs, found {}",
            feeds.len()
        )));
    }
    model.select_outputs_by_name([OUTPUT])?;
    let plan = model.into_optimized()?.into_runnable()?;
    Ok((plan, feeds))
}

/// Runs `f`, turning a panic inside the runtime into an error, so a bad
/// model file or input fails one call instead of the caller's thread.
fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the runtime panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_and_tokenizer_are_shareable() {
        assert_send_sync::<MiniLm>();
        assert_send_sync::<Tokenizer>();
    }

    #[test]
    fn missing_files_say_how_to_install() {
        let dir = std::env::temp_dir().join("fief-embed-test-no-such-dir");
        let err = MiniLm::load(&dir).err().map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("bash scripts/setup-embedder.sh"), "{msg}");
        assert!(msg.contains("model.onnx"), "{msg}");
    }

    #[test]
    fn unit_vector_rejects_non_finite_and_zero() {
        assert!(unit_vector(&[f32::NAN, 1.0]).is_err());
        assert!(unit_vector(&[0.0, 0.0]).is_err());
        let v = unit_vector(&[3.0, 4.0]).unwrap_or_default();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
