//! `fief kb`: knowledge bases from the command line, including bulk
//! ingestion of a folder with a progress bar.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::{print, CliResult};

#[derive(Subcommand)]
pub enum KbCommand {
    /// Create a knowledge base.
    Create {
        name: String,
    },
    Ls,
    /// Show a knowledge base: counts, placement and index kind.
    Get {
        name: String,
    },
    /// Delete a knowledge base with all its documents.
    Rm {
        name: String,
    },
    /// List a knowledge base's documents.
    Docs {
        kb: String,
    },
    /// Add or replace one document from a text file (`-` for stdin).
    Put {
        kb: String,
        id: String,
        file: PathBuf,
        /// Metadata KEY=VALUE (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// Delete one document.
    RmDoc {
        kb: String,
        id: String,
    },
    /// Ingest every matching file under a folder; each file's relative
    /// path is its document id and its `path` metadata.
    Ingest {
        kb: String,
        dir: PathBuf,
        /// File extensions to take (comma-separated).
        #[arg(long, default_value = "txt,md,markdown,rst")]
        ext: String,
        /// Metadata KEY=VALUE added to every document (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// Ranked chunks for a question.
    Query {
        kb: String,
        query: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Metadata filter KEY=VALUE (repeatable; all must match).
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
}

fn pairs(items: &[String], what: &str) -> Result<Map<String, Value>, String> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .ok_or_else(|| format!("{what} `{kv}` is not KEY=VALUE"))
        })
        .collect()
}

/// Document ids may hold `/`; it travels percent-encoded in one segment.
fn doc_path(kb: &str, id: &str) -> String {
    format!(
        "/api/v1/knowledge-bases/{kb}/documents/{}",
        id.replace('/', "%2F")
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
            println!("knowledge base {name} deleted");
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
            println!("document {id} deleted");
        }
        KbCommand::Ingest { kb, dir, ext, meta } => ingest(c, &kb, &dir, &ext, &meta).await?,
        KbCommand::Query {
            kb,
            query,
            top_k,
            filter,
        } => {
            let body =
                json!({"query": query, "top_k": top_k, "filter": pairs(&filter, "--filter")?});
            let req = c
                .request(Method::POST, &format!("/api/v1/knowledge-bases/{kb}/query"))
                .json(&body);
            print(&c.send(req).await?.1);
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

async fn ingest(c: &Client, kb: &str, dir: &Path, ext: &str, meta: &[String]) -> CliResult {
    let exts: Vec<&str> = ext.split(',').map(str::trim).collect();
    let mut files = Vec::new();
    collect(dir, &exts, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no .{} files under {}", exts.join("/."), dir.display()).into());
    }
    let base = pairs(meta, "--meta")?;
    let progress = Progress {
        total: files.len(),
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    let (mut chunks, mut failed) = (0u64, Vec::new());
    for (i, file) in files.iter().enumerate() {
        let id = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        progress.show(i, chunks, &id);
        let outcome = match std::fs::read_to_string(file) {
            Err(e) => Err(format!("cannot read: {e}")),
            Ok(text) => {
                let mut metadata = base.clone();
                metadata.insert("path".into(), Value::String(id.clone()));
                let req = c
                    .request(Method::PUT, &doc_path(kb, &id))
                    .json(&json!({"text": text, "metadata": metadata}));
                c.send(req).await.map_err(|e| e.to_string())
            }
        };
        match outcome {
            Ok((_, body)) => chunks += body["chunks"].as_u64().unwrap_or(0),
            Err(e) => failed.push(format!("{id}: {e}")),
        }
    }
    progress.show(files.len(), chunks, "");
    if progress.tty {
        eprintln!();
    }
    println!(
        "ingested {} of {} files into {kb}: {chunks} chunks in {:.1}s",
        files.len() - failed.len(),
        files.len(),
        progress.started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        for f in &failed {
            eprintln!("failed: {f}");
        }
        Err(format!("{} files were not ingested", failed.len()).into())
    }
}
