//! `fief tenant` and `fief key`: the operator's commands on the admin plane.

use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::{output, pairs, CliResult};

/// Where a tenant's content lives.
#[derive(Clone, Copy, ValueEnum)]
pub enum Tier {
    /// Shared tables (SQLite) or row-level security (PostgreSQL); the shared ONNX pool.
    Pool,
    /// Tables or a schema of its own; the shared ONNX pool.
    Bridge,
    /// A database of its own and its own worker threads.
    Silo,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Pool => "pool",
            Tier::Bridge => "bridge",
            Tier::Silo => "silo",
        }
    }
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints it and its first API key (shown once; with
    /// --quiet only the key).
    Create {
        /// The tenant id: lowercase letters, digits and `-`.
        id: String,
        /// Its placement.
        #[arg(long, value_enum, default_value = "pool")]
        tier: Tier,
        /// A tag, KEY=VALUE (repeatable), seen by policies and invoices.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Change a tenant's tier (its placement) and/or replace its tags.
    Update {
        /// The tenant id.
        id: String,
        /// The new placement; its content is moved.
        #[arg(long, value_enum)]
        tier: Option<Tier>,
        /// A tag, KEY=VALUE (repeatable); replaces all tags.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// List every tenant.
    Ls,
    /// Show one tenant, with its effective quotas.
    Get {
        /// The tenant id.
        id: String,
    },
    /// Offboard: deletes every row and object of the tenant and destroys its key.
    Rm {
        /// The tenant id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a tenant; prints it once (with --quiet, only the key).
    Create {
        /// The tenant id.
        tenant: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Bind the key to a role of the tenant: it gets only the role's permissions.
        #[arg(long)]
        role: Option<String>,
        /// A tag policies see on the key, KEY=VALUE (repeatable); a trust
        /// policy may let the key carry it into a role session.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// List a tenant's keys (ids, names, roles; never the keys).
    Ls {
        /// The tenant id.
        tenant: String,
    },
    /// Revoke a key at once.
    Revoke {
        /// The tenant id.
        tenant: String,
        /// The key's id (from `fief key ls`).
        key_id: String,
    },
}

/// A new key's answer: the key alone with `--quiet`, and a reminder that
/// it is never shown again.
fn show_new_key(body: &Value) {
    output::show(body, Some("api_key"));
    if !output::mode().quiet {
        eprintln!(
            "the API key is shown once: store it now (AWS SDKs sign with the same key as \
             aws_access_key_id and aws_secret_access_key)"
        );
    }
}

pub async fn tenant(c: &Client, command: TenantCommand) -> CliResult {
    match command {
        TenantCommand::Create { id, tier, tags } => {
            let tags = pairs(&tags, "--tag")?;
            let (_, body) = c
                .send(
                    c.request(Method::POST, "/admin/v1/tenants")
                        .json(&json!({"id": id, "tier": tier.name(), "tags": tags})),
                )
                .await?;
            show_new_key(&body);
        }
        TenantCommand::Update { id, tier, tags } => {
            let mut body = Map::new();
            if let Some(tier) = tier {
                body.insert("tier".into(), Value::from(tier.name()));
            }
            if !tags.is_empty() {
                body.insert("tags".into(), Value::Object(pairs(&tags, "--tag")?));
            }
            if body.is_empty() {
                return Err("nothing to change: give --tier and/or --tag".into());
            }
            let req = c.request(Method::PATCH, &format!("/admin/v1/tenants/{id}"));
            output::show(&c.send(req.json(&body)).await?.1, Some("tenant.id"));
        }
        TenantCommand::Ls => output::show(
            &c.send(c.request(Method::GET, "/admin/v1/tenants")).await?.1,
            Some("id"),
        ),
        TenantCommand::Get { id } => output::show(
            &c.send(c.request(Method::GET, &format!("/admin/v1/tenants/{id}")))
                .await?
                .1,
            Some("tenant.id"),
        ),
        TenantCommand::Rm { id } => {
            c.send(c.request(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
                .await?;
            output::say(&format!(
                "tenant {id} offboarded: its rows and objects are deleted and its data key destroyed"
            ));
        }
    }
    Ok(())
}

pub async fn key(c: &Client, command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::Create {
            tenant,
            name,
            role,
            tags,
        } => {
            let tags = pairs(&tags, "--tag")?;
            let (_, body) = c
                .send(
                    c.request(
                        Method::POST,
                        &format!("/admin/v1/tenants/{tenant}/api-keys"),
                    )
                    .json(&json!({"name": name, "role": role, "tags": tags})),
                )
                .await?;
            show_new_key(&body);
        }
        KeyCommand::Ls { tenant } => output::show(
            &c.send(c.request(Method::GET, &format!("/admin/v1/tenants/{tenant}/api-keys")))
                .await?
                .1,
            Some("id"),
        ),
        KeyCommand::Revoke { tenant, key_id } => {
            c.send(c.request(
                Method::DELETE,
                &format!("/admin/v1/tenants/{tenant}/api-keys/{key_id}"),
            ))
            .await?;
            output::say(&format!("key {key_id} revoked"));
        }
    }
    Ok(())
}
