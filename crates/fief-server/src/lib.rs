//! The fief gateway: the data plane and the admin plane, each on its own
//! listener, over the store, the policy engine, the audit log and the model
//! cache. [`start`] is used by `fief serve`, `fief demo`, the tests and the
//! benchmark alike.

mod access;
mod answer;
mod audit;
mod auth;
mod authfail;
mod coherence;
mod console;
mod error;
mod fence;
mod island;
mod knowledge;
mod llm;
mod logs;
mod meter;
mod metrics;
mod models;
mod openapi;
mod placement;
mod quota;
mod request_id;
mod route_table;
mod routes;
mod signing;
mod state;
mod tables;
mod tenants;
mod verify;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use fief_audit::AuditLog;
use fief_config::Config;
use fief_crypto::{write_secret_file, MasterKey};
use fief_policy::PolicyEngine;
use fief_serving::ModelCache;
use fief_store::{Store, StoreOptions};

pub use error::ApiError;
pub use meter::sample_storage;
pub use routes::{Plane, TARGET_MODEL_HEADER};

/// The OpenAPI document a listener serves at `/openapi.json`.
pub fn openapi_json(plane: Plane) -> String {
    openapi::document(plane)
        .to_pretty_json()
        .unwrap_or_default()
}

/// An operation: (method, path).
pub type Operation = (String, String);

/// Every (method, path) a listener serves, and every one its OpenAPI
/// document describes (they must be the same list).
pub fn operations(plane: Plane) -> (Vec<Operation>, Vec<Operation>) {
    let served = match plane {
        Plane::Data => routes::data_routes().merge(routes::open_routes(plane)),
        Plane::Admin => routes::admin_routes().merge(routes::open_routes(plane)),
    }
    .table();
    // axum's `{*rest}` is OpenAPI's `{rest}`.
    let name = |(m, p): (route_table::Method, String)| (m.name().to_owned(), p.replace("{*", "{"));
    (
        served
            .into_iter()
            .map(|(m, p)| name((m, p.to_owned())))
            .collect(),
        openapi::operations(plane).into_iter().map(name).collect(),
    )
}
pub use state::AppState;

/// File names inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The audit log's directory of segments.
pub const AUDIT_DIR: &str = fief_audit::DIR;
/// Held locked by the one `fief serve` using the data directory.
pub const LOCK_FILE: &str = "fief.lock";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Startup(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] fief_store::StoreError),
    #[error(transparent)]
    Policy(#[from] fief_policy::PolicyError),
    #[error(transparent)]
    Audit(#[from] fief_audit::AuditError),
    #[error(transparent)]
    Crypto(#[from] fief_crypto::CryptoError),
    #[error("server task failed: {0}")]
    Task(String),
}

/// Secrets that come from the environment, never from the config file.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `FIEF_ADMIN_TOKEN`; generated into the data directory when absent.
    pub admin_token: Option<String>,
    /// `FIEF_MASTER_KEY` (64 hex); a key file in the data directory when absent.
    pub master_key: Option<String>,
    /// Upstream credentials by variable name (`llm.upstreams[].api_key_env`),
    /// read before the process environment (the demo, tests and benches
    /// hand them over without touching the environment).
    pub upstream_keys: std::collections::BTreeMap<String, String>,
}

impl Secrets {
    pub fn from_env() -> Self {
        Self {
            admin_token: std::env::var("FIEF_ADMIN_TOKEN")
                .ok()
                .filter(|s| !s.is_empty()),
            master_key: std::env::var("FIEF_MASTER_KEY")
                .ok()
                .filter(|s| !s.is_empty()),
            upstream_keys: Default::default(),
        }
    }

    /// What can be checked without touching the data directory (so a bad
    /// secret creates nothing): the master key's form.
    pub fn check(&self) -> Result<(), ServerError> {
        if let Some(hex) = &self.master_key {
            MasterKey::from_hex(hex).map_err(|_| {
                ServerError::Startup(
                    "FIEF_MASTER_KEY is not a key: it must be 64 hex digits (32 bytes), e.g. \
                     from `openssl rand -hex 32`, and the same on every replica"
                        .into(),
                )
            })?;
        }
        Ok(())
    }
}

/// A running gateway.
pub struct Running {
    pub data_addr: SocketAddr,
    /// The island listeners, in the order of `config.islands`.
    pub island_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub admin_token: String,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// The data directory's lock, released when this gateway is gone.
    _lock: std::fs::File,
}

impl Running {
    /// Stops accepting connections, lets in-flight requests finish.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until both listeners stop.
    pub async fn wait(self) -> Result<(), ServerError> {
        for task in self.tasks {
            task.await
                .map_err(|e| ServerError::Task(e.to_string()))?
                .map_err(|e| ServerError::Task(e.to_string()))?;
        }
        // Refusals of the last, partial window are audited too.
        self.state.flush_auth_failures().await;
        Ok(())
    }

    /// A handle that triggers graceful shutdown (e.g. from a signal handler).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens everything under the data directory, binds both listeners and
/// starts serving.
pub async fn start(config: Config, secrets: Secrets) -> Result<Running, ServerError> {
    secrets.check()?;
    // A start-up that fails (a port in use, a database away) leaves no
    // data directory behind that it created.
    let dir = config.data_dir.clone();
    let fresh = !dir.exists();
    let started = start_in(config, secrets).await;
    if started.is_err() && fresh {
        let _ = std::fs::remove_dir_all(&dir);
    }
    started
}

async fn start_in(config: Config, secrets: Secrets) -> Result<Running, ServerError> {
    // Everything fief creates under the data directory is its owner's only
    // (files 0600, directories 0700), including what SQLite and the object
    // store create.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServerError::Startup(format!("data directory {}: {e}", dir.display())))?;
    let lock = lock_data_dir(&dir)?;
    let master = match &secrets.master_key {
        Some(hex) => MasterKey::from_hex(hex)
            .map_err(|e| ServerError::Startup(format!("FIEF_MASTER_KEY: {e}")))?,
        None => MasterKey::load_or_create(&dir.join(MASTER_KEY_FILE))?,
    };
    let admin_token = admin_token(&dir, secrets.admin_token)?;
    let policy = PolicyEngine::new()?;
    let store = Store::open(StoreOptions {
        data_dir: &dir,
        master,
        postgres: config.postgres.as_ref(),
        oidc: config.oidc.clone(),
        admin_token: admin_token.clone(),
        silo_idle: std::time::Duration::from_secs(config.models.silo_idle_secs),
        objects: config.object_store.clone(),
    })
    .await?;
    // With PostgreSQL every replica appends to one chain there; a single
    // node keeps its files (and no file log is opened beside the database).
    let audit = if store.audits_in_database() {
        audit::Audit::database()
    } else {
        audit::Audit::File(Box::new(AuditLog::open(
            &dir,
            audit_options(&config.audit),
        )?))
    };
    let cache = ModelCache::new(
        config.models.cache_bytes,
        config.models.max_concurrent_loads,
    );

    let data_listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    let data_addr = local_addr(&data_listener, config.listen)?;
    let mut islands = Vec::new();
    for island in &config.islands {
        let l = bind(island.listen).await?;
        let addr = local_addr(&l, island.listen)?;
        islands.push((l, addr, Arc::new(island.clone())));
    }
    let admin_addr = local_addr(&admin_listener, config.admin_listen)?;

    let placement = placement::Placement::new(
        config.models.silo_threads,
        config.models.max_silo_threads,
        std::time::Duration::from_secs(config.models.silo_idle_secs),
    );
    for tenant in store.list_tenants().await? {
        placement
            .apply(&tenant.id, tenant.tier)
            .map_err(|e| ServerError::Startup(format!("placement of tenant {}: {e}", tenant.id)))?;
    }
    let embedder = fief_knowledge::Embedder::from_config(config.knowledge.upstream.as_ref())
        .map_err(|e| ServerError::Startup(format!("knowledge: {e}")))?;
    tracing::info!("embedder: {}", embedder.describe());
    if config.postgres.is_some() && config.object_store.is_none() {
        tracing::warn!(
            "[postgres] without [object_store]: model bytes and audit anchors stay in this \
             replica's data directory, so a second replica cannot serve its models; configure \
             [object_store] before running more than one"
        );
    }
    let knowledge = fief_knowledge::Knowledge::new(config.knowledge.clone(), embedder);
    let llm = fief_llm::Llm::new(
        &config.llm,
        |var| {
            secrets
                .upstream_keys
                .get(var)
                .cloned()
                .or_else(|| std::env::var(var).ok())
        },
        store.derived_key("llm upstream user id"),
        config.quotas.scheduling,
    )
    .map_err(|e| ServerError::Startup(format!("llm: {e}")))?;
    let quota =
        quota::QuotaGate::new(&config).map_err(|e| ServerError::Startup(format!("quotas: {e}")))?;
    let meter =
        meter::Meter::new(&config).map_err(|e| ServerError::Startup(format!("metering: {e}")))?;
    let logs =
        logs::Logbook::new(&config.logs).map_err(|e| ServerError::Startup(format!("logs: {e}")))?;
    let checks = verify::Checks::new(&config.data_dir, data_addr, admin_addr);
    let state = Arc::new(AppState {
        checks,
        llm,
        quota,
        meter,
        logs,
        knowledge,
        placement,
        metrics: metrics::Metrics::default(),
        config,
        store,
        policy,
        audit: Arc::new(audit),
        cache,
        activity: fence::Activity::default(),
        auth_failures: authfail::AuthFailures::default(),
        coherence: coherence::Coherence::default(),
    });
    audit::spawn_writer(&state);
    let (shutdown, rx) = watch::channel(false);
    // Before the first request: the position read is older than any cache.
    coherence::spawn(&state, rx.clone()).await?;
    let timeouts = (
        std::time::Duration::from_secs(state.config.header_read_timeout_secs),
        std::time::Duration::from_secs(state.config.shutdown_grace_secs),
    );
    let island_addrs = islands.iter().map(|(_, addr, _)| *addr).collect();
    let mut tasks = vec![
        serve(
            data_listener,
            routes::data_router(state.clone(), island::Listener::Shared),
            rx.clone(),
            timeouts,
        ),
        serve(
            admin_listener,
            routes::admin_router(state.clone()),
            rx.clone(),
            timeouts,
        ),
    ];
    for (listener, _, island) in islands {
        let router = routes::data_router(state.clone(), island::Listener::Island(island));
        tasks.push(serve(listener, router, rx.clone(), timeouts));
    }
    meter::spawn_writer(&state);
    tokio::spawn(audit::anchor_periodically(state.clone(), rx.clone()));
    logs::spawn(&state);
    record_audit_repairs(&state).await?;
    tokio::spawn(audit_auth_failures(state.clone(), rx.clone()));
    tokio::spawn(stop_idle_pools(state.clone(), rx.clone()));
    tokio::spawn(expire_usage_events(state.clone(), rx.clone()));
    if state
        .audit
        .file()
        .is_some_and(|log| log.options().fsync == fief_audit::Fsync::Batch)
    {
        tokio::spawn(flush_audit(state.clone(), rx.clone()));
    }
    Ok(Running {
        island_addrs,
        data_addr,
        admin_addr,
        admin_token,
        state,
        shutdown,
        tasks,
        _lock: lock,
    })
}

fn audit_options(c: &fief_config::AuditConfig) -> fief_audit::Options {
    fief_audit::Options {
        fsync: match c.fsync {
            fief_config::AuditFsync::Always => fief_audit::Fsync::Always,
            fief_config::AuditFsync::Batch => fief_audit::Fsync::Batch,
            fief_config::AuditFsync::Never => fief_audit::Fsync::Never,
        },
        segment_bytes: c.segment_bytes,
        segment_secs: c.segment_secs,
        retention_days: c.retention_days,
    }
}

/// What opening the audit log repaired or moved goes into the log itself.
async fn record_audit_repairs(state: &AppState) -> Result<(), ServerError> {
    let Some(opened) = state.audit.file().map(|log| log.opened().clone()) else {
        return Ok(());
    };
    let mut notes = Vec::new();
    if opened.torn_tail_bytes > 0 {
        notes.push(format!(
            "removed {} bytes of an unfinished last line (a write cut short by a crash; never acknowledged)",
            opened.torn_tail_bytes
        ));
    }
    if opened.migrated_legacy {
        notes.push(format!("moved {} into segments", fief_audit::LEGACY_FILE));
    }
    for note in notes {
        state.audit_start_up(note).await?;
    }
    Ok(())
}

/// The `batch` durability: whatever was written reaches the disk within
/// 100 ms.
async fn flush_audit(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let s = state.clone();
                let flushed = tokio::task::spawn_blocking(move || {
                    s.audit.file().map_or(Ok(()), AuditLog::flush)
                })
                .await;
                if let Ok(Err(e)) = flushed {
                    tracing::error!("audit log flush failed: {e}");
                }
            }
            () = stopped(&mut stop) => {
                let _ = state.audit.file().map(AuditLog::flush);
                return;
            }
        }
    }
}

/// Stops silo worker pools that have gone idle.
async fn stop_idle_pools(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let every = (state.placement.idle_period() / 2).max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => { state.placement.stop_idle(); }
            () = stopped(&mut stop) => return,
        }
    }
}

/// Hourly upkeep, from start-up on: deletes raw usage events past
/// `metering.event_retention_days` (the hourly sums invoices read stay),
/// takes the day's storage sample (once per tenant and day), deletes
/// each tenant's log records past its retention, and prunes the change log
/// to a day.
async fn expire_usage_events(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let keep_ms = i64::from(state.config.metering.event_retention_days) * 86_400_000;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                if let Err(e) = state.store.expire_usage_events(now - keep_ms).await {
                    tracing::warn!("expiring old usage events failed: {e}");
                }
                if let Err(e) = meter::sample_storage(&state).await {
                    tracing::warn!("the daily storage sample failed: {e}");
                }
                logs::expire(&state).await;
                if let Err(e) = state.store.prune_changes().await {
                    tracing::warn!("pruning the change log failed: {e}");
                }
            }
            () = stopped(&mut stop) => return,
        }
    }
}

/// Writes the refused credentials of each window to the audit log.
async fn audit_auth_failures(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let window = std::time::Duration::from_secs(state.config.audit.auth_failure_window_secs);
    let mut tick = tokio::time::interval(window);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => state.flush_auth_failures().await,
            () = stopped(&mut stop) => return,
        }
    }
}

/// Takes the data directory's exclusive lock, so two gateways never share
/// one (their audit appends would interleave, and their caches disagree).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ServerError::Startup(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("process {holder}")
            };
            return Err(ServerError::Startup(format!(
                "data directory {} is in use by {who} (lock {}); stop that fief serve, or use \
                 another --data-dir",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(ServerError::Startup(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(|e| ServerError::Startup(format!("{}: {e}", path.display())))?;
    Ok(file)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    l.local_addr()
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves HTTP/1.1 on `listener` until `rx` turns true, then lets open
/// connections finish. Our own accept loop (rather than `axum::serve`) so
/// hyper gets a timer: a client that trickles its headers is cut off after
/// `header_timeout`, and a request body is bounded by the request timeout.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut rx: watch::Receiver<bool>,
    (header_timeout, grace): (std::time::Duration, std::time::Duration),
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        // Every connection task holds a receiver; shutdown waits for all.
        let (open_tx, open_rx) = watch::channel(());
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopped(&mut rx) => break,
            };
            // Streamed answers are many small writes; Nagle would hold each
            // behind the client's delayed ACK (~40 ms).
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().ok();
            let service =
                hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                        if let Some(peer) = peer {
                            req.extensions_mut().insert(auth::Peer(peer));
                        }
                        req
                    },
                ));
            let mut stop = rx.clone();
            let open = open_rx.clone();
            tokio::spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout);
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection ended: {e}");
                        }
                    }
                    () = stopped(&mut stop) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                    }
                }
                drop(open);
            });
        }
        drop(listener);
        drop(open_rx);
        // In-flight requests finish within the grace period; what is left
        // then ends with the process.
        if tokio::time::timeout(grace, open_tx.closed()).await.is_err() {
            tracing::warn!("shutdown grace of {grace:?} over with connections still open");
        }
        Ok(())
    })
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

const MIN_ADMIN_TOKEN_LEN: usize = 24;

/// The admin token from the environment, else from (or newly into) the data
/// directory, readable by its owner only.
fn admin_token(dir: &Path, from_env: Option<String>) -> Result<String, ServerError> {
    if let Some(token) = from_env {
        if token.len() < MIN_ADMIN_TOKEN_LEN
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ServerError::Startup(format!(
                "FIEF_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters without spaces"
            )));
        }
        return Ok(token);
    }
    let path = dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        Ok(_) => Err(ServerError::Startup(format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let token = format!("fiefadm_{}", hex::encode(raw));
            write_secret_file(&path, token.as_bytes())
                .map_err(|e| ServerError::Startup(format!("{}: {e}", path.display())))?;
            Ok(token)
        }
        Err(e) => Err(ServerError::Startup(format!("{}: {e}", path.display()))),
    }
}
