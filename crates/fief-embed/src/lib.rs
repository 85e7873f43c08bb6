//! In-process sentence embeddings with all-MiniLM-L6-v2 on `tract-onnx`, plus
//! the BERT tokenizer it needs and a token-aware text chunker.
//!
//! The model files (`model.onnx`, `vocab.txt`) are not part of the build:
//! `bash scripts/setup-embedder.sh` writes them to [`default_dir`]. The
//! tokenizer reproduces Hugging Face `tokenizers`' `BertNormalizer` +
//! `BertPreTokenizer` + `WordPiece` (what sentence-transformers runs), and
//! embeddings are the model's masked mean pooling, L2-normalised.

mod chunk;
mod model;
mod tokenizer;

use std::path::PathBuf;

pub use chunk::{chunk, Chunk};
pub use model::MiniLm;
pub use tokenizer::{Encoding, Tokenizer};

/// Width of an embedding.
pub const DIM: usize = 384;

/// Longest input the model sees, including `[CLS]` and `[SEP]`; longer
/// texts are truncated (sentence-transformers' `max_seq_length` for this
/// model).
pub const MAX_TOKENS: usize = 256;

/// The command that installs the model files; named in error messages.
const SETUP_COMMAND: &str = "bash scripts/setup-embedder.sh";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model files are not where we looked.
    #[error(
        "the embedder is not installed: {} is missing; run `{SETUP_COMMAND}` \
         (it installs into {}; set FIEF_EMBEDDER_DIR to use another directory)",
        missing.display(),
        dir.display()
    )]
    NotInstalled { dir: PathBuf, missing: PathBuf },
    /// No environment variable says where the model lives.
    #[error(
        "cannot locate the embedder directory: none of FIEF_EMBEDDER_DIR, XDG_DATA_HOME, \
         HOME is set; set FIEF_EMBEDDER_DIR and run `{SETUP_COMMAND}`"
    )]
    NoDataDir,
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `vocab.txt` is not a usable BERT vocabulary.
    #[error("invalid vocabulary {}: {reason}", path.display())]
    InvalidVocab { path: PathBuf, reason: String },
    /// `model.onnx` could not be loaded or is not the expected embedder.
    #[error("cannot load the embedding model {}: {reason}; re-run `{SETUP_COMMAND}`", path.display())]
    InvalidModel { path: PathBuf, reason: String },
    /// Running the model failed or produced unusable output.
    #[error("embedding failed: {0}")]
    Inference(String),
}

/// Where the model files live: `$FIEF_EMBEDDER_DIR` if set and non-empty,
/// else `$XDG_DATA_HOME/fief/embedder`, else `$HOME/.local/share/fief/embedder`
/// (the same rule `scripts/setup-embedder.sh` uses).
pub fn default_dir() -> Result<PathBuf, EmbedError> {
    if let Some(dir) = env_non_empty("FIEF_EMBEDDER_DIR") {
        return Ok(dir);
    }
    if let Some(data) = env_non_empty("XDG_DATA_HOME") {
        return Ok(data.join("fief").join("embedder"));
    }
    if let Some(home) = env_non_empty("HOME") {
        return Ok(home
            .join(".local")
            .join("share")
            .join("fief")
            .join("embedder"));
    }
    Err(EmbedError::NoDataDir)
}

fn env_non_empty(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_names_the_setup_script_and_the_dir() {
        let e = EmbedError::NotInstalled {
            dir: PathBuf::from("/x/embedder"),
            missing: PathBuf::from("/x/embedder/model.onnx"),
        };
        let msg = e.to_string();
        assert!(msg.contains("bash scripts/setup-embedder.sh"), "{msg}");
        assert!(msg.contains("/x/embedder/model.onnx"), "{msg}");
        assert!(msg.contains("installs into /x/embedder"), "{msg}");
    }
}
