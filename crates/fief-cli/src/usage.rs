//! `fief usage` (a tenant's own usage, or with `--all` every tenant's as
//! the operator) and `fief invoice MONTH` (the operator's invoices, per
//! tenant or `--by-tag KEY`), as JSON or `--csv`.

use clap::Args;
use reqwest::Method;

use crate::client::Client;
use crate::CliResult;

#[derive(Args)]
pub struct UsageArgs {
    /// Start: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (default: this month's start).
    #[arg(long)]
    pub from: Option<String>,
    /// End, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated: model, principal, day, hour (and tenant with --all).
    #[arg(long, value_name = "DIMS")]
    pub group_by: Option<String>,
    /// As the operator: every tenant's usage (admin token).
    #[arg(long)]
    pub all: bool,
    /// As the operator: one tenant's usage.
    #[arg(long, requires = "all")]
    pub tenant: Option<String>,
    /// CSV instead of JSON.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Args)]
pub struct InvoiceArgs {
    /// The month, YYYY-MM (UTC).
    pub month: String,
    /// Group by the value of this tenant tag (as it was at each request),
    /// e.g. CostCenter.
    #[arg(long, value_name = "KEY")]
    pub by_tag: Option<String>,
    /// CSV instead of JSON.
    #[arg(long)]
    pub csv: bool,
}

fn query(pairs: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v.to_owned())))
        .collect()
}

async fn show(c: &Client, path: &str, q: Vec<(String, String)>, csv: bool) -> CliResult {
    let resp = c.send_raw(c.request(Method::GET, path).query(&q)).await?;
    let text = resp.text().await.map_err(|e| c.connect(e))?;
    if csv {
        crate::outln!("{}", text.trim_end_matches('\n'));
    } else {
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        crate::print(&body);
    }
    Ok(())
}

pub async fn usage(c: &Client, args: UsageArgs) -> CliResult {
    let path = if args.all {
        "/admin/v1/usage"
    } else {
        "/api/v1/usage"
    };
    let q = query(&[
        ("from", args.from.as_deref()),
        ("to", args.to.as_deref()),
        ("group_by", args.group_by.as_deref()),
        ("tenant", args.tenant.as_deref()),
        ("format", args.csv.then_some("csv")),
    ]);
    show(c, path, q, args.csv).await
}

pub async fn invoice(c: &Client, args: InvoiceArgs) -> CliResult {
    let q = query(&[
        ("group_by_tag", args.by_tag.as_deref()),
        ("format", args.csv.then_some("csv")),
    ]);
    show(
        c,
        &format!("/admin/v1/invoices/{}", args.month),
        q,
        args.csv,
    )
    .await
}
