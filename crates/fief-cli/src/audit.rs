//! `fief audit`: verify the hash chain, anchor it, list and follow entries.

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{self, Format};
use crate::{outln, CliResult, Global};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; names the first bad entry. Offline on a
    /// single node's data directory (--data-dir), or with --server where
    /// the server keeps it (the shared chain on PostgreSQL, checked against
    /// its newest anchor, so a removed tail is reported too).
    Verify {
        /// Ask the server (FIEF_ADMIN_URL) to verify the log it keeps.
        #[arg(long)]
        server: bool,
    },
    /// Checkpoint the shared chain's head to the object store now
    /// (PostgreSQL deployments; replicas also do it every audit.anchor_secs).
    Anchor,
    /// The newest entries that match, oldest first.
    Ls(Filter),
    /// Follow the log: the newest entries that match, then each new one as
    /// it is written (Ctrl-C stops).
    Tail {
        #[command(flatten)]
        filter: Filter,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Args)]
pub struct Filter {
    /// Only this tenant's entries.
    #[arg(long)]
    tenant: Option<String>,
    /// Only allowed or denied decisions.
    #[arg(long, value_parser = ["allow", "deny"])]
    decision: Option<String>,
    /// Only this kind of entry.
    #[arg(long, value_parser = ["authz", "admin", "authn", "usage"])]
    kind: Option<String>,
    /// Entries at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// How many of the newest entries (at most 10000).
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

impl Filter {
    fn query(&self, limit: usize) -> Vec<(&'static str, String)> {
        let mut q = vec![("limit", limit.to_string())];
        for (k, v) in [
            ("tenant", &self.tenant),
            ("decision", &self.decision),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q
    }
}

pub async fn run(g: &Global, command: AuditCommand) -> CliResult {
    match command {
        AuditCommand::Verify { server: false } => verify_dir(&g.data_dir()),
        AuditCommand::Verify { server: true } => verify_on_server(&g.admin()?).await,
        AuditCommand::Anchor => {
            let c = g.admin()?;
            let (_, body) = c
                .send(c.request(Method::POST, "/admin/v1/audit/anchor"))
                .await?;
            output::show(&body, Some("anchor.seq"));
            Ok(())
        }
        AuditCommand::Ls(filter) => {
            let entries = fetch(&g.admin()?, &filter, filter.limit).await?;
            if output::mode().format == Format::Table && !output::mode().quiet {
                output::show(&Value::Array(entries.iter().map(row).collect()), None);
            } else {
                output::show(&json!({ "entries": entries }), Some("seq"));
            }
            Ok(())
        }
        AuditCommand::Tail { filter, interval } => tail(&g.admin()?, &filter, interval).await,
    }
}

async fn fetch(
    c: &Client,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<Value>, crate::ClientError> {
    let req = c
        .request(Method::GET, "/admin/v1/audit")
        .query(&filter.query(limit));
    let (_, body) = c.send(req).await?;
    let mut entries = body["entries"].as_array().cloned().unwrap_or_default();
    entries.sort_by_key(|e| e["seq"].as_u64().unwrap_or(0));
    Ok(entries)
}

/// An entry as one table row: what an operator scans for.
fn row(e: &Value) -> Value {
    json!({
        "seq": e["seq"], "ts": e["ts"], "kind": e["kind"], "decision": e["decision"],
        "tenant": e["tenant"], "principal": e["principal"], "action": e["action"],
        "resource": e["resource"],
    })
}

/// One line per entry: a row on a terminal, JSON Lines when piped.
fn line(e: &Value) {
    let m = output::mode();
    if m.quiet {
        outln!("{}", e["seq"]);
    } else if m.format == Format::Json {
        outln!("{e}");
    } else {
        let r = row(e);
        let cell = |k: &str| match &r[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            v => v.to_string(),
        };
        outln!(
            "{:>8}  {}  {:<5}  {:<5}  {:<12}  {}  {}  {}",
            cell("seq"),
            cell("ts"),
            cell("kind"),
            cell("decision"),
            cell("tenant"),
            cell("principal"),
            cell("action"),
            cell("resource")
        );
    }
}

async fn tail(c: &Client, filter: &Filter, interval: f64) -> CliResult {
    if !(0.05..=3600.0).contains(&interval) {
        return Err("--interval must be between 0.05 and 3600 seconds".into());
    }
    let mut last = 0u64;
    for e in fetch(c, filter, filter.limit).await? {
        last = last.max(e["seq"].as_u64().unwrap_or(0));
        line(&e);
    }
    loop {
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
        // The newest thousand: more than that in one interval is shown from
        // the newest thousand on.
        for e in fetch(c, filter, 1000).await? {
            let seq = e["seq"].as_u64().unwrap_or(0);
            if seq > last {
                last = seq;
                line(&e);
            }
        }
    }
}

/// Checks the whole audit log, segment by segment (`fief audit verify`).
fn verify_dir(data_dir: &Path) -> CliResult {
    let path = data_dir.join(fief_server::AUDIT_DIR);
    let started = std::time::Instant::now();
    let verified =
        fief_audit::verify_dir(data_dir).map_err(|e| format!("{}: FAILED: {e}", path.display()))?;
    outln!(
        "{}: OK, {} entries (from {}) in {} segment(s), chain head {}; verified in {:.2?}",
        path.display(),
        verified.entries,
        verified.first_seq,
        verified.segments,
        verified.last_hash,
        started.elapsed()
    );
    Ok(())
}

/// `fief audit verify --server`: the server walks the chain where it keeps
/// it; a broken or truncated chain exits non-zero with the reason.
async fn verify_on_server(c: &Client) -> CliResult {
    let (_, v) = c
        .send(c.request(Method::GET, "/admin/v1/audit/verify"))
        .await?;
    let place = v["place"].as_str().unwrap_or("?");
    if v["ok"] != Value::Bool(true) {
        return Err(format!(
            "audit log ({place}): FAILED: {}",
            v["error"].as_str().unwrap_or("no reason given")
        )
        .into());
    }
    let anchor = match v["anchor"].as_object() {
        Some(a) => format!(
            ", matches the anchor of entry {} taken at {}",
            a.get("seq").unwrap_or(&Value::Null),
            a.get("at").and_then(|t| t.as_str()).unwrap_or("?")
        ),
        None => String::new(),
    };
    outln!(
        "audit log ({place}): OK, {} entries (from {}), chain head {}{anchor}; verified in {} ms",
        v["entries"],
        v["first_seq"],
        v["head"].as_str().unwrap_or("?"),
        v["took_ms"]
    );
    Ok(())
}
