//! `fief`: the gateway binary and its command-line client.

mod access;
mod admin;
mod audit;
mod client;
mod demo;
mod kb;
mod llm;
mod models;
mod output;
mod quota;
mod tables;
mod usage;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Map, Value};

use client::{Client, ClientError, Plane};
use fief_config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "fief",
    version,
    about = "A self-hosted multi-tenant AI gateway with provable tenant isolation",
    long_about = "A self-hosted multi-tenant AI gateway with provable tenant isolation.\n\n\
                  `fief serve` runs the gateway; every other command is a client of a running \
                  one: tenant commands use FIEF_API_KEY on the data plane (FIEF_DATA_URL), \
                  operator commands the admin token on the admin plane (FIEF_ADMIN_URL). \
                  The flags below work before or after the subcommand."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes, anywhere on the line.
#[derive(Args, Clone)]
pub(crate) struct Global {
    /// The data plane's URL (tenant commands).
    #[arg(
        long,
        global = true,
        env = "FIEF_DATA_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    data_url: String,
    /// The admin plane's URL (operator commands).
    #[arg(
        long,
        global = true,
        env = "FIEF_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    admin_url: String,
    /// A tenant credential: an API key, a role-session token or an OIDC JWT.
    #[arg(long, global = true, env = "FIEF_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The operator's admin token (default: admin.token in --data-dir).
    #[arg(long, global = true, env = "FIEF_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The gateway's data directory: where `serve` keeps its state and the
    /// CLI finds admin.token [default: ./fief-data].
    #[arg(long, global = true, env = "FIEF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Output format [default: table on a terminal, json when piped].
    #[arg(long, short = 'o', global = true, value_enum, env = "FIEF_OUTPUT")]
    output: Option<output::Format>,
    /// Print only the essential value: a new key or token, an id, a name.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

const DEFAULT_DATA_DIR: &str = "./fief-data";

impl Global {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The operator's token: the flag or variable, else the data directory's file.
    fn admin_token(&self) -> Result<String, ClientError> {
        match self.admin_token.as_deref() {
            Some("") => Err(ClientError::Usage(
                "FIEF_ADMIN_TOKEN is set but empty: set it to the operator's token, or unset it \
                 to read admin.token from --data-dir"
                    .into(),
            )),
            Some(t) => Ok(t.to_owned()),
            None => {
                let path = self.data_dir().join(fief_server::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        ClientError::Usage(format!(
                            "no admin token: {} cannot be read ({e}); set FIEF_ADMIN_TOKEN (or \
                             --admin-token), or point --data-dir at the gateway's data directory",
                            path.display()
                        ))
                    })
            }
        }
    }

    pub(crate) fn admin(&self) -> Result<Client, ClientError> {
        Ok(Client::new(
            &self.admin_url,
            &self.admin_token()?,
            Plane::Admin,
        ))
    }

    pub(crate) fn tenant(&self) -> Result<Client, ClientError> {
        match self.api_key.as_deref() {
            None => Err(ClientError::Usage(
                "no tenant credential: set FIEF_API_KEY (or --api-key) to an API key \
                 (`fief key create TENANT --quiet` prints one) or a session token"
                    .into(),
            )),
            Some("") => Err(ClientError::Usage(
                "FIEF_API_KEY is set but empty: the command that should have filled it \
                 failed or printed nothing; set it to an API key or a session token"
                    .into(),
            )),
            Some(key) => Ok(Client::new(&self.data_url, key, Plane::Data)),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (data plane and admin plane).
    Serve(ServeArgs),
    /// Run the whole story end to end on an embedded server in a temporary directory.
    Demo,
    /// Write a commented configuration file to start from.
    Init {
        /// Where to write it.
        #[arg(default_value = "fief.toml")]
        file: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (`source <(fief completion bash)`).
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Who the tenant credential is (FIEF_API_KEY): tenant, principal, source.
    Whoami,
    /// Audit log: verify the chain, anchor it, list and follow entries (operator).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Manage tenants (operator).
    Tenant {
        #[command(subcommand)]
        command: admin::TenantCommand,
    },
    /// Manage a tenant's API keys (operator).
    Key {
        #[command(subcommand)]
        command: admin::KeyCommand,
    },
    /// Your ONNX models (tenant).
    Model {
        #[command(subcommand)]
        command: models::ModelCommand,
    },
    /// Invoke one of your models (tenant).
    Invoke(models::InvokeArgs),
    /// Knowledge bases: documents, ingestion of a folder, queries (tenant).
    Kb {
        #[command(subcommand)]
        command: kb::KbCommand,
    },
    /// Tenant tables: small JSON items under (table, key) (tenant).
    Table {
        #[command(subcommand)]
        command: tables::TableCommand,
    },
    /// Tenant policies (Cedar): validate offline, store, explain decisions.
    Policy {
        #[command(subcommand)]
        command: access::PolicyCommand,
    },
    /// Roles that principals (of this or a trusted tenant) may assume.
    Role {
        #[command(subcommand)]
        command: access::RoleCommand,
    },
    /// Role sessions: short-lived tokens with a role's permissions.
    Sts {
        #[command(subcommand)]
        command: access::StsCommand,
    },
    /// Chat with a foundation model (tenant); the answer is printed as it arrives.
    Chat(llm::ChatArgs),
    /// Foundation models (tenant).
    Llm {
        #[command(subcommand)]
        command: llm::LlmCommand,
    },
    /// Quotas: your limits and what remains; lower limits for your roles,
    /// keys and users; with --tenant, a tenant's limits (operator).
    Quota {
        #[command(subcommand)]
        command: quota::QuotaCommand,
    },
    /// Usage: your tenant's own, or with --all every tenant's aggregates (operator).
    Usage(usage::UsageArgs),
    /// A month's invoices per tenant, or per value of a tag (operator).
    Invoice(usage::InvoiceArgs),
    /// Probe a live deployment for cross-tenant leaks over every resource
    /// kind, action and addressing form; exits non-zero on any leak (operator).
    VerifyIsolation(verify::VerifyArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The config file (TOML); every key can also be set by FIEF_<KEY>.
    #[arg(long, env = "FIEF_CONFIG")]
    config: Option<PathBuf>,
    /// The data plane's address (overrides `listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The admin plane's address (overrides `admin_listen`).
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// Validate the configuration and the secrets, print the configuration, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init(cli.global.output, cli.global.quiet);
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

/// Plain text unless stderr is a terminal: a log file gets no colour codes.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIEF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error>>;

async fn run(cli: Cli) -> CliResult {
    let g = cli.global;
    match cli.command {
        Command::Serve(args) => serve(&g, args).await,
        Command::Demo => demo::run().await,
        Command::Init { file, force } => init(&file, force),
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fief", &mut out);
            crate::outln!("{}", String::from_utf8_lossy(&out).trim_end());
            Ok(())
        }
        Command::Whoami => whoami(&g).await,
        Command::Audit { command } => audit::run(&g, command).await,
        Command::Tenant { command } => admin::tenant(&g.admin()?, command).await,
        Command::Key { command } => admin::key(&g.admin()?, command).await,
        Command::Model { command } => models::model(&g, command).await,
        Command::Invoke(args) => models::invoke(&g.tenant()?, args).await,
        Command::Kb { command } => kb::run(&g.tenant()?, command).await,
        Command::Table { command } => tables::run(&g.tenant()?, command).await,
        Command::Policy {
            command: access::PolicyCommand::Validate { file },
        } => access::validate(&file),
        Command::Policy { command } => access::policy(&g.tenant()?, command).await,
        Command::Role { command } => access::role(&g.tenant()?, command).await,
        Command::Sts { command } => access::sts(&g.tenant()?, command).await,
        Command::Chat(chat) => llm::chat(&g.tenant()?, chat).await,
        Command::Llm { command } => llm::llm(&g.tenant()?, command).await,
        Command::Quota { command } => quota::run(|| g.tenant(), || g.admin(), command).await,
        Command::Usage(args) => {
            let c = if args.all { g.admin()? } else { g.tenant()? };
            usage::usage(&c, args).await
        }
        Command::Invoice(args) => usage::invoice(&g.admin()?, args).await,
        Command::VerifyIsolation(args) => {
            verify::run(args, &g.data_url, &g.admin_url, &g.admin_token()?).await
        }
    }
}

async fn serve(g: &Global, args: ServeArgs) -> CliResult {
    let overrides = Overrides {
        data_dir: g.data_dir.clone(),
        listen: args.listen,
        admin_listen: args.admin_listen,
    };
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    let secrets = fief_server::Secrets::from_env();
    // Everything that can be checked is checked before anything is created.
    secrets.check()?;
    if args.check_config {
        crate::outln!("# configuration is valid\n{}", config.to_toml());
        return Ok(());
    }
    let running = fief_server::start(config, secrets).await?;
    tracing::info!(data = %running.data_addr, admin = %running.admin_addr, "fief is serving");
    // Written without `outln!`: a closed stdout must not stop the server.
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

/// The commented example configuration, as shipped in the repository.
const EXAMPLE_CONFIG: &str = include_str!("../../../fief.example.toml");

/// `fief init`: a starting configuration that `serve --check-config` accepts.
fn init(file: &Path, force: bool) -> CliResult {
    if file.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it, or name another file",
            file.display()
        )
        .into());
    }
    std::fs::write(file, EXAMPLE_CONFIG).map_err(|e| format!("{}: {e}", file.display()))?;
    output::say(&format!(
        "wrote {}; check it with `fief serve --config {} --check-config`",
        file.display(),
        file.display()
    ));
    Ok(())
}

async fn whoami(g: &Global) -> CliResult {
    let c = g.tenant()?;
    let (_, me) = c
        .send(c.request(reqwest::Method::GET, "/api/v1/me"))
        .await?;
    output::show(&me, Some("principal"));
    Ok(())
}

pub(crate) fn print(v: &Value) {
    output::show(v, None);
}

/// `KEY=VALUE` flags (`--tag`, `--meta`) as an object; a key given twice
/// is an error, not a silent overwrite.
pub(crate) fn pairs(items: &[String], flag: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for kv in items {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{flag} `{kv}` is not KEY=VALUE"))?;
        if out.insert(k.to_owned(), Value::from(v)).is_some() {
            return Err(format!("{flag} names `{k}` twice; give each key one value"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag says what it is, and a flag with a
    /// fixed set of values lists them.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no description"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}: no help"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_pair_given_twice_is_refused() {
        let e = pairs(&["a=1".into(), "a=2".into()], "--tag").unwrap_err();
        assert!(e.contains("`a` twice"), "{e}");
        assert!(pairs(&["a".into()], "--meta").is_err());
    }

    #[test]
    fn the_example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fief.toml");
        std::fs::write(&file, EXAMPLE_CONFIG).unwrap();
        Config::load(Some(&file), std::iter::empty(), &Overrides::default()).unwrap();
    }
}
