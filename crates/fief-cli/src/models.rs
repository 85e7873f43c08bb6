//! `fief model` and `fief invoke`: a tenant's ONNX models.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::{output, pairs, CliResult, Global};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a small sample ONNX model (4 inputs, 2 outputs; weights from --seed) to try fief with.
    Sample {
        /// Where to write the .onnx file.
        file: PathBuf,
        /// Seeds the weights: another seed, another model.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Upload (or replace) a model: a raw .onnx file, or a .tar.gz package
    /// of model.onnx and model.json (its declared inputs and outputs).
    Put {
        /// The model's name in your namespace.
        name: String,
        /// The .onnx file or .tar.gz/.tgz package.
        file: PathBuf,
    },
    /// List your models.
    Ls,
    /// Show a model: signature, size, sha256, version, tags.
    Get {
        /// The model: `name`, `tenant/name` or a fief resource name.
        name: String,
    },
    /// Replace a model's tags (what attribute-based policies compare).
    Tag {
        /// The model's name.
        name: String,
        /// KEY=VALUE (repeatable); no tags clears them.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Delete a model.
    Rm {
        /// The model's name.
        name: String,
    },
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The model: `name`, or a fief resource name.
    model: String,
    /// The inputs as JSON (`[[1, 2]]` or `{"name": [[1, 2]]}`), or `@file`.
    #[arg(long)]
    input: String,
    /// The endpoint: `shared` (pool) or your tenant id (silo, bridge).
    #[arg(long, default_value = "shared")]
    endpoint: String,
}

/// `.tar.gz`/`.tgz` files are model packages; anything else is raw ONNX.
fn content_type_for(file: &Path) -> &'static str {
    let name = file.to_string_lossy();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

pub async fn model(g: &Global, command: ModelCommand) -> CliResult {
    if let ModelCommand::Sample { file, seed } = &command {
        let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], *seed).to_onnx();
        std::fs::write(file, onnx).map_err(|e| format!("{}: {e}", file.display()))?;
        output::say(&format!(
            "wrote {} (input [batch, 4] -> output [batch, 2])",
            file.display()
        ));
        return Ok(());
    }
    let c = g.tenant()?;
    match command {
        ModelCommand::Sample { .. } => {}
        ModelCommand::Put { name, file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let req = c
                .request(Method::PUT, &format!("/api/v1/models/{name}"))
                .header(reqwest::header::CONTENT_TYPE, content_type_for(&file))
                .body(bytes);
            let (status, body) = c.send(req).await?;
            if !output::mode().quiet {
                eprintln!(
                    "{} model {name}",
                    if status == reqwest::StatusCode::CREATED {
                        "created"
                    } else {
                        "replaced"
                    }
                );
            }
            output::show(&body, Some("name"));
        }
        ModelCommand::Ls => output::show(
            &c.send(c.request(Method::GET, "/api/v1/models")).await?.1,
            Some("name"),
        ),
        ModelCommand::Get { name } => output::show(
            &c.send(c.request(Method::GET, &format!("/api/v1/models/{name}")))
                .await?
                .1,
            Some("name"),
        ),
        ModelCommand::Tag { name, tags } => {
            let req = c
                .request(Method::PUT, &format!("/api/v1/models/{name}/tags"))
                .json(&pairs(&tags, "--tag")?);
            output::show(&c.send(req).await?.1, Some("name"));
        }
        ModelCommand::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/models/{name}")))
                .await?;
            output::say(&format!("model {name} deleted"));
        }
    }
    Ok(())
}

pub async fn invoke(c: &Client, args: InvokeArgs) -> CliResult {
    let text = match args.input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => args.input.clone(),
    };
    let inputs: Value =
        serde_json::from_str(&text).map_err(|e| format!("--input is not JSON: {e}"))?;
    let req = c
        .request(
            Method::POST,
            &format!("/endpoints/{}/invocations", args.endpoint),
        )
        .header(fief_server::TARGET_MODEL_HEADER, &args.model)
        .json(&json!({ "inputs": inputs }));
    output::show(&c.send(req).await?.1, None);
    Ok(())
}
