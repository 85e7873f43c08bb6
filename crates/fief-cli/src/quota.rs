//! `fief quota`: limits and what remains. As a tenant (FIEF_API_KEY): your
//! own levels, and lower limits for your roles, keys and users. As the
//! operator (`--tenant ID`, admin token): a tenant's own limits over its
//! tier's defaults.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{Client, ClientError};
use crate::CliResult;

/// A limit's value: a whole number, or `none` (operator only: back to the
/// tier's default).
#[derive(Args, Default)]
pub struct LimitArgs {
    /// Requests per minute (LLM calls, invocations, embeddings, KB queries and writes).
    #[arg(long, value_name = "N|none")]
    pub requests_per_minute: Option<String>,
    /// Foundation-model tokens (prompt + completion) per minute.
    #[arg(long, value_name = "N|none")]
    pub tokens_per_minute: Option<String>,
    /// Requests running at once.
    #[arg(long, value_name = "N|none")]
    pub concurrent_requests: Option<String>,
    /// Foundation-model tokens per calendar month (UTC).
    #[arg(long, value_name = "N|none")]
    pub monthly_token_budget: Option<String>,
    /// Share of the shared compute when tenants compete (operator only).
    #[arg(long, value_name = "W|none")]
    pub weight: Option<String>,
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Your limits at each level and what remains (or, with --tenant, a
    /// tenant's settings and effective limits, as the operator).
    Get {
        /// As the operator: this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set limits: with --tenant, a tenant's own (operator; `none` removes
    /// one); else a subject of your tenant (`role:NAME`, `api-key:ID`,
    /// `user:SUBJECT`), at or below your tenant's limits, replacing what it had.
    Set {
        /// `role:NAME`, `api-key:ID` or `user:SUBJECT` (tenant).
        subject: Option<String>,
        /// As the operator: this tenant.
        #[arg(long, conflicts_with = "subject")]
        tenant: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove a subject's limits (tenant).
    Rm {
        /// `role:NAME`, `api-key:ID` or `user:SUBJECT`.
        subject: String,
    },
}

fn value(flag: &str, raw: &str) -> Result<Value, ClientError> {
    if raw == "none" {
        return Ok(Value::Null);
    }
    if flag == "weight" {
        return raw
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| ClientError::Usage(format!("--weight: {raw:?} is not a number")));
    }
    raw.parse::<u64>().map(Value::from).map_err(|_| {
        ClientError::Usage(format!(
            "--{}: {raw:?} is not a whole number or `none`",
            flag.replace('_', "-")
        ))
    })
}

fn limits(args: &LimitArgs) -> Result<Map<String, Value>, ClientError> {
    let mut out = Map::new();
    for (flag, v) in [
        ("requests_per_minute", &args.requests_per_minute),
        ("tokens_per_minute", &args.tokens_per_minute),
        ("concurrent_requests", &args.concurrent_requests),
        ("monthly_token_budget", &args.monthly_token_budget),
        ("weight", &args.weight),
    ] {
        if let Some(raw) = v {
            out.insert(flag.to_owned(), value(flag, raw)?);
        }
    }
    if out.is_empty() {
        return Err(ClientError::Usage(
            "give at least one of --requests-per-minute, --tokens-per-minute, \
             --concurrent-requests, --monthly-token-budget, --weight"
                .into(),
        ));
    }
    Ok(out)
}

/// `tenant`/`admin`: whichever plane the command needs.
pub async fn run(
    tenant: impl FnOnce() -> Result<Client, ClientError>,
    admin: impl FnOnce() -> Result<Client, ClientError>,
    command: QuotaCommand,
) -> CliResult {
    match command {
        QuotaCommand::Get { tenant: Some(id) } => {
            let c = admin()?;
            let (_, body) = c
                .send(c.request(Method::GET, &format!("/admin/v1/tenants/{id}")))
                .await?;
            crate::print(&json!({
                "tenant": body["tenant"]["id"],
                "tier": body["tenant"]["tier"],
                "quotas": body["tenant"]["quotas"],
                "effective_quotas": body["effective_quotas"],
            }));
        }
        QuotaCommand::Get { tenant: None } => {
            let c = tenant()?;
            let (_, body) = c.send(c.request(Method::GET, "/api/v1/quotas")).await?;
            crate::print(&body);
        }
        QuotaCommand::Set {
            tenant: Some(id),
            limits: l,
            ..
        } => {
            let c = admin()?;
            let req = c
                .request(Method::PATCH, &format!("/admin/v1/tenants/{id}"))
                .json(&json!({"quotas": limits(&l)?}));
            let (_, body) = c.send(req).await?;
            crate::print(&json!({"tenant": id, "quotas": body["tenant"]["quotas"]}));
        }
        QuotaCommand::Set {
            subject: Some(subject),
            limits: l,
            ..
        } => {
            let body = limits(&l)?;
            if body.values().any(Value::is_null) || body.contains_key("weight") {
                return Err(ClientError::Usage(
                    "a subject's limits are replaced as given: `none` and --weight are for \
                     the operator's --tenant; `fief quota rm` removes a subject's limits"
                        .into(),
                )
                .into());
            }
            let c = tenant()?;
            let req = c
                .request(
                    Method::PUT,
                    &format!("/api/v1/quotas/{}", crate::client::segment(&subject)),
                )
                .json(&body);
            let (_, body) = c.send(req).await?;
            crate::print(&body);
        }
        QuotaCommand::Set { .. } => return Err(ClientError::Usage(
            "name a subject (role:NAME, api-key:ID, user:SUBJECT), or --tenant ID as the operator"
                .into(),
        )
        .into()),
        QuotaCommand::Rm { subject } => {
            let c = tenant()?;
            c.send(c.request(
                Method::DELETE,
                &format!("/api/v1/quotas/{}", crate::client::segment(&subject)),
            ))
            .await?;
            crate::outln!("removed the limits of {subject}");
        }
    }
    Ok(())
}
