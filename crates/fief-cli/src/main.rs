//! `fief`: the gateway binary and its command-line client.

mod access;
mod client;
mod demo;
mod kb;
mod llm;
mod quota;
mod usage;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use client::{Client, ClientError};
use fief_config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "fief",
    version,
    about = "A self-hosted multi-tenant AI gateway with provable tenant isolation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (data plane and admin plane).
    Serve(ServeArgs),
    /// Run the whole story end to end on an embedded server in a temporary directory.
    Demo,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage tenants (admin plane).
    Tenant {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage a tenant's API keys (admin plane).
    Key {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage your models (as a tenant, with FIEF_API_KEY).
    Model {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Knowledge bases: documents, ingestion of a folder, queries.
    Kb {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: kb::KbCommand,
    },
    /// Tenant policies (Cedar): validate offline, store, explain decisions.
    Policy {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: access::PolicyCommand,
    },
    /// Roles that principals (of this or a trusted tenant) may assume.
    Role {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: access::RoleCommand,
    },
    /// Role sessions: short-lived tokens with a role's permissions.
    Sts {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: access::StsCommand,
    },
    /// Chat with a foundation model (as a tenant, with FIEF_API_KEY); the
    /// answer is printed as it arrives.
    Chat {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(flatten)]
        chat: llm::ChatArgs,
    },
    /// Foundation models (as a tenant, with FIEF_API_KEY).
    Llm {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(subcommand)]
        command: llm::LlmCommand,
    },
    /// Quotas: your limits and what remains; lower limits for your roles,
    /// keys and users; with --tenant, a tenant's limits (as the operator).
    Quota {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: quota::QuotaCommand,
    },
    /// Usage: your tenant's own (FIEF_API_KEY), or with --all every
    /// tenant's aggregates (the operator's admin token).
    Usage {
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        args: usage::UsageArgs,
    },
    /// A month's invoices per tenant, or per value of a tag (operator).
    Invoice {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        args: usage::InvoiceArgs,
    },
    /// Probe a live deployment for cross-tenant leaks over every resource
    /// kind, action and addressing form; exits non-zero on any leak. Kinds
    /// the deployment does not offer are reported as skipped.
    VerifyIsolation(verify::VerifyArgs),
    /// Invoke a model (as a tenant, with FIEF_API_KEY).
    Invoke {
        #[command(flatten)]
        tenant: TenantArgs,
        /// The model: `name`, or a fief resource name.
        model: String,
        /// The inputs as JSON (`[[1, 2]]` or `{"name": [[1, 2]]}`), or `@file`.
        #[arg(long)]
        input: String,
        /// The endpoint: `shared` (pool) or your tenant id (silo, bridge).
        #[arg(long, default_value = "shared")]
        endpoint: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The config file (TOML); every key can also be set by FIEF_<KEY>.
    #[arg(long, env = "FIEF_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names the first bad entry. Offline on a
    /// single node's data directory, or with --server where the server
    /// keeps it (the shared chain on PostgreSQL, checked against its
    /// newest anchor, so a removed tail is reported too).
    Verify {
        /// Ask the server (FIEF_ADMIN_URL) to verify the log it keeps.
        #[arg(long)]
        server: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Checkpoint the shared chain's head to the object store now
    /// (PostgreSQL deployments; replicas also do it every audit.anchor_secs).
    Anchor {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
struct AdminArgs {
    #[arg(long, env = "FIEF_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    admin_url: String,
    /// Defaults to the token file in --data-dir.
    #[arg(long, env = "FIEF_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[arg(long, env = "FIEF_DATA_DIR", default_value = "./fief-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct TenantArgs {
    #[arg(long, env = "FIEF_DATA_URL", default_value = "http://127.0.0.1:8080")]
    data_url: String,
    #[arg(long, env = "FIEF_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its first API key once.
    Create {
        id: String,
        #[arg(long, default_value = "pool")]
        tier: String,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Change a tenant's tier (its placement) and/or replace its tags.
    Update {
        id: String,
        #[arg(long)]
        tier: Option<String>,
        /// A tag, KEY=VALUE (repeatable); replaces all tags.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Ls,
    Get {
        id: String,
    },
    /// Offboard: deletes every row and object of the tenant and destroys its key.
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    Create {
        tenant: String,
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
    Ls {
        tenant: String,
    },
    Revoke {
        tenant: String,
        key_id: String,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a small sample ONNX model (4 inputs, 2 outputs; weights from --seed) to try fief with.
    Sample {
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Upload (or replace) a model from an ONNX file.
    Put {
        name: String,
        file: PathBuf,
    },
    Ls,
    Get {
        name: String,
    },
    /// Replace a model's tags (what attribute-based policies compare).
    Tag {
        name: String,
        /// KEY=VALUE (repeatable); no tags clears them.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Rm {
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIEF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error>>;

async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo => demo::run().await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    server: false,
                    admin,
                },
        } => audit_verify(&admin.data_dir),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    server: true,
                    admin,
                },
        } => audit_verify_on_server(&admin_client(&admin)?).await,
        Command::Audit {
            command: AuditCommand::Anchor { admin },
        } => {
            let c = admin_client(&admin)?;
            let (_, body) = c
                .send(c.request(reqwest::Method::POST, "/admin/v1/audit/anchor"))
                .await?;
            print(&body);
            Ok(())
        }
        Command::Tenant { admin, command } => tenant(admin, command).await,
        Command::Key { admin, command } => key(admin, command).await,
        Command::Model { tenant, command } => model(tenant, command).await,
        Command::Kb { tenant, command } => kb::run(&tenant_client(&tenant)?, command).await,
        Command::Policy {
            command: access::PolicyCommand::Validate { file },
            ..
        } => access::validate(&file),
        Command::Policy { tenant, command } => {
            access::policy(&tenant_client(&tenant)?, command).await
        }
        Command::Role { tenant, command } => access::role(&tenant_client(&tenant)?, command).await,
        Command::Chat { tenant, chat } => llm::chat(&tenant_client(&tenant)?, chat).await,
        Command::Llm { tenant, command } => llm::llm(&tenant_client(&tenant)?, command).await,
        Command::Quota {
            tenant,
            admin,
            command,
        } => quota::run(|| tenant_client(&tenant), || admin_client(&admin), command).await,
        Command::Usage {
            tenant,
            admin,
            args,
        } => {
            let c = if args.all {
                admin_client(&admin)?
            } else {
                tenant_client(&tenant)?
            };
            usage::usage(&c, args).await
        }
        Command::Invoice { admin, args } => usage::invoice(&admin_client(&admin)?, args).await,
        Command::VerifyIsolation(args) => verify::run(args).await,
        Command::Sts { tenant, command } => access::sts(&tenant_client(&tenant)?, command).await,
        Command::Invoke {
            tenant,
            model,
            input,
            endpoint,
        } => invoke(tenant, &model, &input, &endpoint).await,
    }
}

async fn serve(args: ServeArgs) -> CliResult {
    let overrides = Overrides {
        data_dir: args.data_dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
    };
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    if args.check_config {
        println!("# configuration is valid\n{}", config.to_toml());
        return Ok(());
    }
    let running = fief_server::start(config, fief_server::Secrets::from_env()).await?;
    tracing::info!(data = %running.data_addr, admin = %running.admin_addr, "fief is serving");
    // Written without `println!`: a closed stdout must not stop the server.
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "fief data plane on http://{}  admin plane on http://{}",
        running.data_addr, running.admin_addr
    );
    if std::env::var_os("FIEF_ADMIN_TOKEN").is_none() {
        let path = running
            .state
            .config
            .data_dir
            .join(fief_server::ADMIN_TOKEN_FILE);
        let _ = writeln!(
            out,
            "admin token: in {} (mode 0600); the CLI reads it from there",
            path.display()
        );
    }
    let _ = out.flush();
    let stop = running.shutdown_handle();
    // SIGTERM (what an orchestrator sends) or Ctrl-C: stop accepting, let
    // requests in flight finish within `shutdown_grace_secs`.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await?;
    Ok(())
}

/// Checks the whole audit log, segment by segment (`fief audit verify`).
fn audit_verify(data_dir: &Path) -> CliResult {
    let path = data_dir.join(fief_server::AUDIT_DIR);
    let started = std::time::Instant::now();
    let verified =
        fief_audit::verify_dir(data_dir).map_err(|e| format!("{}: FAILED: {e}", path.display()))?;
    println!(
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
async fn audit_verify_on_server(c: &Client) -> CliResult {
    let (_, v) = c
        .send(c.request(reqwest::Method::GET, "/admin/v1/audit/verify"))
        .await?;
    let place = v["place"].as_str().unwrap_or("?");
    if v["ok"] != serde_json::Value::Bool(true) {
        return Err(format!(
            "audit log ({place}): FAILED: {}",
            v["error"].as_str().unwrap_or("no reason given")
        )
        .into());
    }
    let anchor = match v["anchor"].as_object() {
        Some(a) => format!(
            ", matches the anchor of entry {} taken at {}",
            a.get("seq").unwrap_or(&serde_json::Value::Null),
            a.get("at").and_then(|t| t.as_str()).unwrap_or("?")
        ),
        None => String::new(),
    };
    println!(
        "audit log ({place}): OK, {} entries (from {}), chain head {}{anchor}; verified in {} ms",
        v["entries"],
        v["first_seq"],
        v["head"].as_str().unwrap_or("?"),
        v["took_ms"]
    );
    Ok(())
}

fn admin_client(admin: &AdminArgs) -> Result<Client, ClientError> {
    let token = match &admin.admin_token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(admin.data_dir.join(fief_server::ADMIN_TOKEN_FILE))
            .map(|t| t.trim().to_owned())
            .map_err(|_| ClientError::Usage("no admin token: set FIEF_ADMIN_TOKEN or --admin-token (or --data-dir holding admin.token)".into()))?,
    };
    Ok(Client::new(&admin.admin_url, &token))
}

fn tenant_client(tenant: &TenantArgs) -> Result<Client, ClientError> {
    let key = tenant
        .api_key
        .as_deref()
        .ok_or_else(|| ClientError::Usage("no tenant key: set FIEF_API_KEY or --api-key".into()))?;
    Ok(Client::new(&tenant.data_url, key))
}

pub(crate) fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn tenant(admin: AdminArgs, command: TenantCommand) -> CliResult {
    let c = admin_client(&admin)?;
    match command {
        TenantCommand::Create { id, tier, tags } => {
            let tags = parse_tags(&tags)?;
            let (_, body) = c
                .send(
                    c.request(Method::POST, "/admin/v1/tenants")
                        .json(&json!({"id": id, "tier": tier, "tags": tags})),
                )
                .await?;
            print(&body["tenant"]);
            println!(
                "API key (shown once, store it now): {}",
                body["api_key"].as_str().unwrap_or("")
            );
        }
        TenantCommand::Update { id, tier, tags } => {
            let mut body = serde_json::Map::new();
            if let Some(tier) = tier {
                body.insert("tier".into(), Value::from(tier));
            }
            if !tags.is_empty() {
                body.insert("tags".into(), Value::Object(parse_tags(&tags)?));
            }
            let req = c.request(Method::PATCH, &format!("/admin/v1/tenants/{id}"));
            print(&c.send(req.json(&body)).await?.1["tenant"]);
        }
        TenantCommand::Ls => print(&c.send(c.request(Method::GET, "/admin/v1/tenants")).await?.1),
        TenantCommand::Get { id } => print(
            &c.send(c.request(Method::GET, &format!("/admin/v1/tenants/{id}")))
                .await?
                .1,
        ),
        TenantCommand::Rm { id } => {
            c.send(c.request(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
                .await?;
            println!("tenant {id} offboarded: its rows and objects are deleted and its data key destroyed");
        }
    }
    Ok(())
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

pub(crate) fn parse_tags(tags: &[String]) -> Result<serde_json::Map<String, Value>, String> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .ok_or_else(|| format!("tag {t:?} is not KEY=VALUE"))
        })
        .collect()
}

async fn key(admin: AdminArgs, command: KeyCommand) -> CliResult {
    let c = admin_client(&admin)?;
    match command {
        KeyCommand::Create {
            tenant,
            name,
            role,
            tags,
        } => {
            let tags = parse_tags(&tags)?;
            let (_, body) = c
                .send(
                    c.request(
                        Method::POST,
                        &format!("/admin/v1/tenants/{tenant}/api-keys"),
                    )
                    .json(&json!({"name": name, "role": role, "tags": tags})),
                )
                .await?;
            println!(
                "key {} created; API key (shown once): {}",
                body["id"].as_str().unwrap_or(""),
                body["api_key"].as_str().unwrap_or("")
            );
        }
        KeyCommand::Ls { tenant } => print(
            &c.send(c.request(Method::GET, &format!("/admin/v1/tenants/{tenant}/api-keys")))
                .await?
                .1,
        ),
        KeyCommand::Revoke { tenant, key_id } => {
            c.send(c.request(
                Method::DELETE,
                &format!("/admin/v1/tenants/{tenant}/api-keys/{key_id}"),
            ))
            .await?;
            println!("key {key_id} revoked");
        }
    }
    Ok(())
}

async fn model(tenant: TenantArgs, command: ModelCommand) -> CliResult {
    if let ModelCommand::Sample { file, seed } = &command {
        let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], *seed).to_onnx();
        std::fs::write(file, onnx).map_err(|e| format!("{}: {e}", file.display()))?;
        println!(
            "wrote {} (input [batch, 4] -> output [batch, 2])",
            file.display()
        );
        return Ok(());
    }
    let c = tenant_client(&tenant)?;
    match command {
        ModelCommand::Sample { .. } => {}
        ModelCommand::Put { name, file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let req = c
                .request(Method::PUT, &format!("/api/v1/models/{name}"))
                .header(reqwest::header::CONTENT_TYPE, content_type_for(&file))
                .body(bytes);
            let (status, body) = c.send(req).await?;
            println!(
                "{} model {name}",
                if status == reqwest::StatusCode::CREATED {
                    "created"
                } else {
                    "replaced"
                }
            );
            print(&body);
        }
        ModelCommand::Ls => print(&c.send(c.request(Method::GET, "/api/v1/models")).await?.1),
        ModelCommand::Get { name } => print(
            &c.send(c.request(Method::GET, &format!("/api/v1/models/{name}")))
                .await?
                .1,
        ),
        ModelCommand::Tag { name, tags } => {
            let req = c
                .request(Method::PUT, &format!("/api/v1/models/{name}/tags"))
                .json(&parse_tags(&tags)?);
            print(&c.send(req).await?.1);
        }
        ModelCommand::Rm { name } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/models/{name}")))
                .await?;
            println!("model {name} deleted");
        }
    }
    Ok(())
}

async fn invoke(tenant: TenantArgs, model: &str, input: &str, endpoint: &str) -> CliResult {
    let c = tenant_client(&tenant)?;
    let text = match input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => input.to_owned(),
    };
    let inputs: Value =
        serde_json::from_str(&text).map_err(|e| format!("--input is not JSON: {e}"))?;
    let req = c
        .request(Method::POST, &format!("/endpoints/{endpoint}/invocations"))
        .header(fief_server::TARGET_MODEL_HEADER, model)
        .json(&json!({"inputs": inputs}));
    print(&c.send(req).await?.1);
    Ok(())
}
