//! `fief kb`: knowledge bases from the command line, including bulk
//! ingestion of a folder with a progress bar.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{Client, ClientError};
use crate::{pairs, print, CliResult};

#[derive(Subcommand)]
pub enum KbCommand {
    /// Create a knowledge base.
    Create {
        /// Its name in your tenant.
        name: String,
    },
    /// List your knowledge bases with their document and chunk counts.
    Ls,
    /// Show a knowledge base: counts, placement and index kind.
    Get {
        /// The knowledge base.
        name: String,
    },
    /// Delete a knowledge base with all its documents.
    Rm {
        /// The knowledge base.
        name: String,
    },
    /// List a knowledge base's documents.
    Docs {
        /// The knowledge base.
        kb: String,
    },
    /// Add or replace one document from a text file (`-` for stdin).
    Put {
        /// The knowledge base.
        kb: String,
        /// The document's id (may hold `/`).
        id: String,
        /// The text file, or `-` for stdin.
        file: PathBuf,
        /// Metadata KEY=VALUE (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// Delete one document.
    RmDoc {
        /// The knowledge base.
        kb: String,
        /// The document's id.
        id: String,
    },
    /// Ingest every matching file under a folder; each file's relative
    /// path is its document id and its `path` metadata. Empty files are
    /// skipped.
    Ingest {
        /// The knowledge base.
        kb: String,
        /// The folder.
        dir: PathBuf,
        /// File extensions to take (comma-separated).
        #[arg(long, default_value = "txt,md,markdown,rst")]
        ext: String,
        /// Metadata KEY=VALUE added to every document (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// Also delete the base's documents that no file under the folder
        /// matches any more (the folder is the whole base).
        #[arg(long)]
        prune: bool,
    },
    /// Ranked chunks for a question.
    Query {
        /// The knowledge base.
        kb: String,
        /// The question.
        query: String,
        /// How many chunks (at most knowledge.max_top_k).
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Metadata filter KEY=VALUE (repeatable): different keys must all
        /// match; a key given more than once matches any of its values.
        #[arg(long = "filter")]
        filter: Vec<String>,
        /// How chunks are found: by meaning (vector), by their words
        /// (keyword, BM25), or both fused (hybrid).
        #[arg(long, default_value = "hybrid", value_parser = ["vector", "keyword", "hybrid"])]
        mode: String,
    },
    /// An answer from a foundation model, given the base's best chunks, with
    /// citations (`--quiet`: the answer only).
    Answer {
        /// The knowledge base.
        kb: String,
        /// The question.
        query: String,
        /// The foundation model to ask (one `fief llm models` lists).
        #[arg(long)]
        model: String,
        /// How many chunks the model is given.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Metadata filter KEY=VALUE, as for `kb query`.
        #[arg(long = "filter")]
        filter: Vec<String>,
        /// How the chunks are found, as for `kb query`.
        #[arg(long, default_value = "hybrid", value_parser = ["vector", "keyword", "hybrid"])]
        mode: String,
        /// The most tokens the answer may have.
        #[arg(long)]
        max_tokens: Option<u64>,
    },
}

/// `--filter` flags: one value per key, or the list of a key's values
/// (any of them matches).
fn filters(items: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for kv in items {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--filter `{kv}` is not KEY=VALUE"))?;
        let v = Value::from(v);
        match out.get_mut(k) {
            None => {
                out.insert(k.to_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
        }
    }
    Ok(out)
}

/// Document ids may hold `/`; it travels percent-encoded in one segment.
fn doc_path(kb: &str, id: &str) -> String {
    format!(
        "/api/v1/knowledge-bases/{kb}/documents/{}",
        crate::client::segment(id)
    )
}

pub async fn run(c: &Client, command: KbCommand) -> CliResult {
    match command {
        KbCommand::Create { name } => {
            let req = c
                .request(Method::POST, "/api/v1/knowledge-bases")
                .json(&json!({ "name": name }));
            print(&c.send(req).await?.1);
        }
        KbCommand::Ls => print(
            &c.send(c.request(Method::GET, "/api/v1/knowledge-bases"))
                .await?
                .1,
        ),
        KbCommand::Get { name } => print(
            &c.send(c.request(Method::GET, &format!("/api/v1/knowledge-bases/{name}")))
                .await?
                .1,
        ),
        KbCommand::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/knowledge-bases/{name}")))
                .await?;
            crate::outln!("knowledge base {name} deleted");
        }
        KbCommand::Docs { kb } => print(
            &c.send(c.request(
                Method::GET,
                &format!("/api/v1/knowledge-bases/{kb}/documents"),
            ))
            .await?
            .1,
        ),
        KbCommand::Put { kb, id, file, meta } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            let body = json!({"text": text, "metadata": pairs(&meta, "--meta")?});
            let req = c.request(Method::PUT, &doc_path(&kb, &id)).json(&body);
            print(&c.send(req).await?.1);
        }
        KbCommand::RmDoc { kb, id } => {
            c.send(c.request(Method::DELETE, &doc_path(&kb, &id)))
                .await?;
            crate::outln!("document {id} deleted");
        }
        KbCommand::Ingest {
            kb,
            dir,
            ext,
            meta,
            prune,
        } => ingest(c, &kb, &dir, &ext, &meta, prune).await?,
        KbCommand::Query {
            kb,
            query,
            top_k,
            filter,
            mode,
        } => {
            let body =
                json!({"query": query, "top_k": top_k, "filter": filters(&filter)?, "mode": mode});
            let req = c
                .request(Method::POST, &format!("/api/v1/knowledge-bases/{kb}/query"))
                .json(&body);
            print(&c.send(req).await?.1);
        }
        KbCommand::Answer {
            kb,
            query,
            model,
            top_k,
            filter,
            max_tokens,
            mode,
        } => {
            let body = json!({"query": query, "model": model, "top_k": top_k,
                "filter": filters(&filter)?, "max_tokens": max_tokens, "mode": mode});
            let req = c
                .request(
                    Method::POST,
                    &format!("/api/v1/knowledge-bases/{kb}/answer"),
                )
                .json(&body);
            crate::output::show(&c.send(req).await?.1, Some("answer"));
        }
    }
    Ok(())
}

fn collect(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect(&path, exts, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// One line redrawn in place on a terminal; plain lines otherwise (logs).
struct Progress {
    total: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn show(&self, done: usize, chunks: u64, current: &str) {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if self.tty {
            let width = 30;
            let filled = (done * width).checked_div(self.total).unwrap_or(width);
            let eta = if rate > 0.0 {
                format!("{:.0}s", (self.total - done) as f64 / rate)
            } else {
                "?".into()
            };
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[2K[{}{}] {done}/{} files, {chunks} chunks, {rate:.1} files/s, eta {eta}  {current}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.total,
            );
            let _ = err.flush();
        } else {
            eprintln!("[{done}/{}] {current}", self.total);
        }
    }
}

async fn ingest(
    c: &Client,
    kb: &str,
    dir: &Path,
    ext: &str,
    meta: &[String],
    prune: bool,
) -> CliResult {
    let exts: Vec<&str> = ext.split(',').map(str::trim).collect();
    let mut files = Vec::new();
    collect(dir, &exts, &mut files)?;
    files.sort();
    if files.is_empty() && !prune {
        return Err(format!("no .{} files under {}", exts.join("/."), dir.display()).into());
    }
    let base = pairs(meta, "--meta")?;
    let progress = Progress {
        total: files.len(),
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    let (mut chunks, mut failed, mut empty) = (0u64, Vec::new(), 0usize);
    let mut ids = std::collections::BTreeSet::new();
    for (i, file) in files.iter().enumerate() {
        let id = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        ids.insert(id.clone());
        progress.show(i, chunks, &id);
        let text = match std::fs::read_to_string(file) {
            Err(e) => {
                failed.push(format!("{id}: cannot read: {e}"));
                continue;
            }
            // Nothing to search: not a failure, and not sent.
            Ok(text) if text.trim().is_empty() => {
                empty += 1;
                continue;
            }
            Ok(text) => text,
        };
        let mut metadata = base.clone();
        metadata.insert("path".into(), Value::String(id.clone()));
        let req = c
            .request(Method::PUT, &doc_path(kb, &id))
            .json(&json!({"text": text, "metadata": metadata}));
        match c.send(req).await {
            Ok((_, body)) => chunks += body["chunks"].as_u64().unwrap_or(0),
            // The server cannot take documents now (no embedder, a store
            // away): every other file would fail the same way, so stop.
            Err(e @ (ClientError::Api { .. } | ClientError::Connect { .. }))
                if e.status()
                    .is_none_or(|s| s == reqwest::StatusCode::SERVICE_UNAVAILABLE) =>
            {
                if progress.tty {
                    eprintln!();
                }
                return Err(format!(
                    "stopped at {id} ({i} of {} files ingested): {e}",
                    files.len()
                )
                .into());
            }
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    progress.show(files.len(), chunks, "");
    if progress.tty {
        eprintln!();
    }
    let mut pruned = 0;
    if prune && failed.is_empty() {
        let (_, listed) = c
            .send(c.request(
                Method::GET,
                &format!("/api/v1/knowledge-bases/{kb}/documents"),
            ))
            .await?;
        for doc in listed["documents"].as_array().into_iter().flatten() {
            let Some(id) = doc["id"].as_str() else {
                continue;
            };
            if !ids.contains(id) {
                c.send(c.request(Method::DELETE, &doc_path(kb, id))).await?;
                pruned += 1;
            }
        }
    }
    let mut summary = format!(
        "ingested {} of {} files into {kb}: {chunks} chunks in {:.1}s",
        files.len() - failed.len() - empty,
        files.len(),
        progress.started.elapsed().as_secs_f64()
    );
    if empty > 0 {
        summary.push_str(&format!("; {empty} empty skipped"));
    }
    if prune {
        summary.push_str(&format!("; {pruned} removed (no file any more)"));
    }
    crate::output::say(&summary);
    if failed.is_empty() {
        Ok(())
    } else {
        for f in &failed {
            eprintln!("failed: {f}");
        }
        if prune {
            eprintln!("nothing pruned: fix the failures first");
        }
        Err(format!("{} files were not ingested", failed.len()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_key_given_twice_matches_any_of_its_values() {
        let f = filters(&["a=1".into(), "b=x".into(), "a=2".into(), "a=3".into()]).unwrap();
        assert_eq!(Value::Object(f), json!({"a": ["1", "2", "3"], "b": "x"}));
        assert!(filters(&["nokey".into()]).is_err());
    }
}
