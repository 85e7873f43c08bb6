//! `fief policy`, `fief role` and `fief sts`: tenant-written access control.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::{pairs, print, CliResult};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a Cedar policy file against fief's schema, offline.
    Validate {
        /// The .cedar file.
        file: PathBuf,
    },
    /// Store (or replace) a policy document from a Cedar file.
    Put {
        /// The document's id in your tenant.
        id: String,
        /// The .cedar file.
        file: PathBuf,
    },
    /// Print a stored policy document's Cedar text.
    Get {
        /// The document's id.
        id: String,
    },
    /// List your policy documents.
    Ls,
    /// Delete a policy document.
    Rm {
        /// The document's id.
        id: String,
    },
    /// The decision for a principal, action and resource, and the ids of the
    /// policies that decided it.
    Explain {
        /// E.g. InvokeModel, GetModel, PutPolicy.
        #[arg(long)]
        action: String,
        /// A model name or a fief resource name (frn:fief:model:acme/m, …).
        #[arg(long)]
        resource: String,
        /// Explain for a session of this role (default: yourself).
        #[arg(long, conflicts_with_all = ["api_key_id", "user"])]
        role: Option<String>,
        /// Explain for this API key of your tenant, by id.
        #[arg(long, conflicts_with = "user")]
        api_key_id: Option<String>,
        /// Explain for this signed-in user (subject).
        #[arg(long)]
        user: Option<String>,
        /// A principal tag, KEY=VALUE (repeatable; with --role or --user).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Resource tags to assume instead of the stored ones, KEY=VALUE.
        #[arg(long = "resource-tag")]
        resource_tags: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Create or replace a role.
    Put {
        /// The role's name.
        name: String,
        /// Cedar file: who may assume the role.
        #[arg(long)]
        trust: PathBuf,
        /// Cedar file of the role's permissions (repeatable).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Required from principals of other tenants.
        #[arg(long)]
        external_id: Option<String>,
        /// The longest session this role grants (at most sts.max_session_secs).
        #[arg(long)]
        max_session_secs: Option<u64>,
    },
    /// Show a role: trust policy, permissions, limits.
    Get {
        /// The role's name.
        name: String,
    },
    /// List your roles.
    Ls,
    /// Delete a role; its sessions and scoped keys lose its permissions.
    Rm {
        /// The role's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum StsCommand {
    /// Assume a role; prints a short-lived session token.
    AssumeRole {
        /// `name`, `tenant/name` or `frn:fief:role:tenant/name`.
        role: String,
        /// A name for the session, shown in audit entries.
        #[arg(long)]
        session_name: String,
        /// A session tag, KEY=VALUE (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The role's external id (required across tenants).
        #[arg(long)]
        external_id: Option<String>,
        /// How long the session lasts (default sts.default_session_secs).
        #[arg(long)]
        duration_seconds: Option<u64>,
    },
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))
}

/// `fief policy validate`: needs no server.
pub fn validate(file: &Path) -> CliResult {
    let text = read(file)?;
    let engine = fief_policy::PolicyEngine::new()?;
    let id = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    match engine.validate_policy(&id, &text) {
        Ok(()) => {
            crate::outln!("{}: valid", file.display());
            Ok(())
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{}:{}:{}: {}", file.display(), p.line, p.column, p.message);
            }
            Err(format!("{}: {} problem(s)", file.display(), errors.0.len()).into())
        }
    }
}

pub async fn policy(c: &Client, command: PolicyCommand) -> CliResult {
    match command {
        PolicyCommand::Validate { file } => validate(&file)?,
        PolicyCommand::Put { id, file } => {
            let req = c
                .request(Method::PUT, &format!("/api/v1/policies/{id}"))
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(read(&file)?);
            print(&c.send(req).await?.1);
        }
        PolicyCommand::Get { id } => {
            let body = c
                .send(c.request(Method::GET, &format!("/api/v1/policies/{id}")))
                .await?
                .1;
            crate::outln!("{}", body["policy"]["policy"].as_str().unwrap_or(""));
        }
        PolicyCommand::Ls => print(&c.send(c.request(Method::GET, "/api/v1/policies")).await?.1),
        PolicyCommand::Rm { id } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/policies/{id}")))
                .await?;
            crate::outln!("policy {id} deleted");
        }
        PolicyCommand::Explain {
            action,
            resource,
            role,
            api_key_id,
            user,
            tags,
            resource_tags,
        } => {
            let tags = pairs(&tags, "--tag")?;
            let principal = match (role, api_key_id, user) {
                (Some(role), _, _) => json!({"role": role, "tags": tags}),
                (_, Some(id), _) => json!({"api_key": id}),
                (_, _, Some(user)) => json!({"user": user, "tags": tags}),
                _ => Value::Null,
            };
            let mut body = json!({"action": action, "resource": resource, "principal": principal});
            if !resource_tags.is_empty() {
                body["resource_tags"] = Value::Object(pairs(&resource_tags, "--resource-tag")?);
            }
            let (_, e) = c
                .send(
                    c.request(Method::POST, "/api/v1/policies/explain")
                        .json(&body),
                )
                .await?;
            crate::outln!(
                "{} {} {} on {}",
                e["decision"].as_str().unwrap_or("?").to_uppercase(),
                e["principal"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["resource"].as_str().unwrap_or("")
            );
            let ids: Vec<&str> = e["policies"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                crate::outln!("  decided by: (no policy)");
            } else {
                crate::outln!("  decided by: {}", ids.join(", "));
            }
            if let Some(reason) = e["reason"].as_str() {
                crate::outln!("  reason: {reason}");
            }
        }
    }
    Ok(())
}

pub async fn role(c: &Client, command: RoleCommand) -> CliResult {
    match command {
        RoleCommand::Put {
            name,
            trust,
            policies,
            external_id,
            max_session_secs,
        } => {
            let policies = policies
                .iter()
                .map(|p| read(p))
                .collect::<Result<Vec<_>, _>>()?;
            let body = json!({"trust_policy": read(&trust)?, "policies": policies,
                              "external_id": external_id, "max_session_secs": max_session_secs});
            let req = c
                .request(Method::PUT, &format!("/api/v1/roles/{name}"))
                .json(&body);
            print(&c.send(req).await?.1);
        }
        RoleCommand::Get { name } => print(
            &c.send(c.request(Method::GET, &format!("/api/v1/roles/{name}")))
                .await?
                .1,
        ),
        RoleCommand::Ls => print(&c.send(c.request(Method::GET, "/api/v1/roles")).await?.1),
        RoleCommand::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/roles/{name}")))
                .await?;
            crate::outln!("role {name} deleted; its sessions and scoped keys lose its permissions");
        }
    }
    Ok(())
}

pub async fn sts(c: &Client, command: StsCommand) -> CliResult {
    let StsCommand::AssumeRole {
        role,
        session_name,
        tags,
        external_id,
        duration_seconds,
    } = command;
    let body = json!({"role": role, "session_name": session_name, "tags": pairs(&tags, "--tag")?,
                      "external_id": external_id, "duration_seconds": duration_seconds});
    let (_, r) = c
        .send(
            c.request(Method::POST, "/api/v1/sts/assume-role")
                .json(&body),
        )
        .await?;
    eprintln!(
        "session {} until {}",
        r["session"].as_str().unwrap_or(""),
        r["expires_at"].as_str().unwrap_or("")
    );
    // The token alone on stdout, for `export FIEF_API_KEY=$(fief sts assume-role …)`.
    crate::outln!("{}", r["token"].as_str().unwrap_or(""));
    Ok(())
}
