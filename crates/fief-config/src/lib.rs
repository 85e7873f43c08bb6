//! Configuration: one TOML file, every key overridable by a `FIEF_*`
//! environment variable (nested keys joined by `__`, e.g.
//! `FIEF_MODELS__CACHE_BYTES`), then by command-line flags. Unknown keys, in
//! the file or in the environment, are errors: a typo must not silently fall
//! back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod unknown;

mod llm;
mod logs;
mod metering;
mod objects;
mod quota;
pub use llm::{LlmConfig, LlmModelConfig, LlmModelEntry, UpstreamConfig};
pub use logs::LogsConfig;
pub use metering::{parse_date, parse_micros, MeteringConfig, PriceEntry};
pub use objects::{is_bucket_name, ObjectStoreConfig};
pub use quota::{
    check_limits, LimitKind, Limits, OnStoreError, OnStoreErrorConfig, QuotaSettings, QuotasConfig,
    RedisConfig, Scheduling,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Every unknown key of the file, each with its line.
    #[error("config file {path}: {} unknown key(s):\n  {}", keys.len(), keys.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    UnknownKeys {
        path: String,
        keys: Vec<unknown::UnknownKey>,
    },
    /// More than one environment variable was wrong; each is named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

/// Environment variables that are not config keys: secrets and client settings.
const NOT_CONFIG_KEYS: &[&str] = &[
    "ADMIN_TOKEN",
    "MASTER_KEY",
    "API_KEY",
    "CONFIG",
    "DATA_URL",
    "ADMIN_URL",
    "OUTPUT",
    "LOG",
    "EMBEDDER_DIR",
];
const NOT_CONFIG_PREFIXES: &[&str] = &["TEST_"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded store, the objects, the keys and the audit log live.
    pub data_dir: PathBuf,
    /// The data plane (tenants).
    pub listen: SocketAddr,
    /// The admin plane (operator), on its own listener.
    pub admin_listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    pub request_timeout_secs: u64,
    /// A client that has not sent its request headers within this long is
    /// disconnected (slow-header attacks hold no connection for long).
    pub header_read_timeout_secs: u64,
    /// On SIGTERM or Ctrl-C the listeners close at once and requests in
    /// flight (streams included) get this long to finish; then the process
    /// exits whatever is left.
    pub shutdown_grace_secs: u64,
    pub models: ModelsConfig,
    /// Dedicated listeners (network islands) for silo tenants or groups.
    pub islands: Vec<IslandConfig>,
    /// JWT bearer tokens from an OIDC identity provider; off when absent.
    pub oidc: Option<OidcConfig>,
    /// Role sessions (`POST /api/v1/sts/assume-role`).
    pub sts: StsConfig,
    /// Knowledge bases and `/v1/embeddings`.
    pub knowledge: KnowledgeConfig,
    /// Every row (platform metadata and tenant content) on PostgreSQL
    /// instead of SQLite; off when absent. Model bytes stay in the object
    /// store under the data directory unless `[object_store]` is set.
    pub postgres: Option<PostgresConfig>,
    /// Model bytes in an S3-compatible bucket instead of under the data
    /// directory (`[object_store]`); what replicas share.
    pub object_store: Option<ObjectStoreConfig>,
    /// The audit log.
    pub audit: AuditConfig,
    /// Foundation-model (LLM) upstreams; none by default.
    pub llm: LlmConfig,
    /// Limits per tier, admission and fair sharing.
    pub quotas: QuotasConfig,
    /// Counters shared by every replica; in memory (this process) when absent.
    pub redis: Option<RedisConfig>,
    /// Usage events, invoices' currency, retention.
    pub metering: MeteringConfig,
    /// Prices by model and effective date (`[[pricing]]`).
    pub pricing: Vec<PriceEntry>,
    /// Private per-tenant invocation logs and their sinks.
    pub logs: LogsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Refused credentials are audited as one entry per credential kind,
    /// source address and window of this many seconds, so a flood of bad
    /// credentials cannot fill the disk.
    pub auth_failure_window_secs: u64,
    /// `always`: every group of entries is on disk before its requests are
    /// answered (survives power loss; each write waits for the disk).
    /// `batch` (the default): written before the answer, so a killed process
    /// loses nothing answered, and flushed to disk every 100 ms (a power
    /// loss can take the last 100 ms). `never`: written before the answer,
    /// flushed when the OS decides.
    pub fsync: AuditFsync,
    /// A segment of the log is closed (indexed, checkpointed) at this size...
    pub segment_bytes: u64,
    /// ...or this age, in seconds.
    pub segment_secs: u64,
    /// Closed segments older than this are removed, whole (off when absent).
    pub retention_days: Option<u64>,
    /// On PostgreSQL: every replica checkpoints the shared chain's head
    /// (count and hash) to the object store this often, so removing the
    /// newest entries is reported by verification.
    pub anchor_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    Always,
    Batch,
    Never,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            auth_failure_window_secs: 60,
            fsync: AuditFsync::Batch,
            segment_bytes: 16 * 1024 * 1024,
            segment_secs: 24 * 3600,
            retention_days: None,
            anchor_secs: 300,
        }
    }
}

/// Two roles: `url` is what requests run as (NOSUPERUSER, NOBYPASSRLS,
/// owning no table: checked at start-up), `admin_url` the owner that
/// migrates and creates bridge schemas and silo databases (it needs CREATE
/// on the database, and CREATEDB for silo tenants). Both can come
/// from the environment (`FIEF_POSTGRES__URL`, `FIEF_POSTGRES__ADMIN_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    pub admin_url: String,
    /// Replicas hear each other's changes by `LISTEN fief_changes` (within
    /// milliseconds). Off for a connection pooler that does not forward
    /// notifications: the change log is then read every `change_poll_ms`.
    #[serde(default = "yes")]
    pub notifications: bool,
    /// How often each replica reads the change log whatever it heard: the
    /// bound on how long a missed notification can leave a cache stale.
    #[serde(default = "default_change_poll_ms")]
    pub change_poll_ms: u64,
    /// How long a request waits for a database connection before it is
    /// refused with 503 (the database is away or saturated).
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

fn yes() -> bool {
    true
}

fn default_change_poll_ms() -> u64 {
    1000
}

fn default_acquire_timeout_ms() -> u64 {
    1500
}

impl PostgresConfig {
    /// The two URLs, every other setting its default.
    pub fn new(url: String, admin_url: String) -> Self {
        Self {
            url,
            admin_url,
            notifications: true,
            change_poll_ms: default_change_poll_ms(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// Word pieces per chunk (the embedder reads at most 254 plus two markers).
    pub chunk_tokens: usize,
    /// Word pieces each chunk repeats from the end of the previous one.
    pub chunk_overlap_tokens: usize,
    /// A knowledge base switches from exact search to an HNSW graph at this
    /// many chunks.
    pub hnsw_threshold: usize,
    /// Largest `top_k` a query may ask for.
    pub max_top_k: usize,
    /// Embed with an OpenAI-compatible upstream instead of the in-process
    /// all-MiniLM-L6-v2 (which needs `scripts/setup-embedder.sh` once).
    pub upstream: Option<EmbeddingsUpstream>,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            chunk_tokens: 200,
            chunk_overlap_tokens: 40,
            hnsw_threshold: 2000,
            max_top_k: 100,
            upstream: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsUpstream {
    /// Base URL; fief posts to `{url}/embeddings` (e.g. `https://api.openai.com/v1`).
    pub url: String,
    /// The `model` field sent upstream.
    pub model: String,
    /// Vector length the model returns; every vector is checked against it.
    pub dimensions: usize,
    /// Environment variable holding the upstream's bearer token, if any
    /// (the secret itself never sits in the config file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// PEM file of a CA that signs the upstream's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_upstream_timeout() -> u64 {
    30
}

/// Algorithms an OIDC provider may sign with. HMAC algorithms are not
/// accepted: a shared secret would let anyone holding it mint tokens, and
/// accepting them beside public keys invites algorithm confusion.
pub const OIDC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Longest clock skew tolerated on `exp`/`nbf`.
pub const MAX_LEEWAY_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`, compared exactly.
    pub issuer: String,
    /// Accepted `aud` values; the token must carry one of them.
    pub audiences: Vec<String>,
    /// The provider's key set, from a file or a URL (one of the two).
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// PEM file of a CA that signs the `jwks_url` server's certificate
    /// (added to the system and webpki roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Pinned algorithms; the token header's `alg` must be one of them.
    pub algorithms: Vec<String>,
    /// The claim that names the caller's tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// An optional claim holding a JSON object of string tags for the user.
    pub tags_claim: Option<String>,
    /// Tolerated clock skew on `exp` and `nbf`, at most 300.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Keys are refetched after this long, and on an unknown `kid` at most
    /// once per `jwks_min_refresh_secs`.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache_secs: u64,
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
}

fn default_tenant_claim() -> String {
    "fief_tenant".into()
}
fn default_leeway() -> u64 {
    60
}
fn default_jwks_cache() -> u64 {
    300
}
fn default_jwks_min_refresh() -> u64 {
    30
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StsConfig {
    /// Longest session any role grants, in seconds.
    pub max_session_secs: u64,
    /// Duration when the request names none.
    pub default_session_secs: u64,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self {
            max_session_secs: 3600,
            default_session_secs: 900,
        }
    }
}

/// A listener that serves only the named tenants. A request for any other
/// tenant's endpoint is refused before authentication, and any other
/// tenant's credential after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IslandConfig {
    pub listen: SocketAddr,
    pub tenants: Vec<fief_core::TenantId>,
    /// These tenants are then refused on the shared listener.
    #[serde(default)]
    pub exclusive: bool,
}

impl Config {
    /// True if `tenant` may only be reached on its island.
    pub fn island_only(&self, tenant: &fief_core::TenantId) -> bool {
        self.islands
            .iter()
            .any(|i| i.exclusive && i.tenants.contains(tenant))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Memory budget of loaded models (counted by ONNX size), LRU-evicted.
    pub cache_bytes: usize,
    /// Model loads that may run at once; more wait their turn.
    pub max_concurrent_loads: usize,
    /// Largest ONNX model a `.tar.gz` package may unpack to.
    pub max_model_bytes: u64,
    /// A cold load slower than this answers 503 ModelNotReady (retryable)
    /// and finishes in the background.
    pub load_deadline_ms: u64,
    /// Threads of each silo tenant's dedicated worker pool.
    pub silo_threads: usize,
    /// Threads all silo tenants' pools may hold together; a pool that would
    /// exceed it is refused (503) until another goes idle.
    pub max_silo_threads: usize,
    /// A silo tenant's worker pool and database connections are released
    /// after this many seconds without a request, and started again on the
    /// next: an idle tenant costs no thread.
    pub silo_idle_secs: u64,
    /// Invocations of bridge and pool tenants that run at once on the
    /// shared pool, handed out by fair queueing (`quotas.scheduling`);
    /// 0: one per core.
    pub shared_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./fief-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout_secs: 60,
            header_read_timeout_secs: 10,
            shutdown_grace_secs: 30,
            models: ModelsConfig::default(),
            islands: Vec::new(),
            oidc: None,
            sts: StsConfig::default(),
            knowledge: KnowledgeConfig::default(),
            postgres: None,
            object_store: None,
            audit: AuditConfig::default(),
            llm: LlmConfig::default(),
            quotas: QuotasConfig::default(),
            redis: None,
            metering: MeteringConfig::default(),
            pricing: Vec::new(),
            logs: LogsConfig::default(),
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 512 * 1024 * 1024,
            max_concurrent_loads: 2,
            silo_threads: 1,
            max_silo_threads: 64,
            silo_idle_secs: 300,
            shared_threads: 0,
            max_model_bytes: 256 * 1024 * 1024,
            load_deadline_ms: 10_000,
        }
    }
}

/// Command-line values, which win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    /// File (if any), then `FIEF_*` variables from `env`, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let (mut table, source) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let keys = unknown::find::<Config>(&text, &table);
                if !keys.is_empty() {
                    return Err(ConfigError::UnknownKeys {
                        path: path.display().to_string(),
                        keys,
                    });
                }
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_owned()),
        };
        // Check the file alone first so its errors name the file.
        Self::from_table(table.clone(), &source)?;
        let all: Vec<(String, String)> = env.into_iter().collect();
        let mut env: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| k.starts_with("FIEF_"))
            .cloned()
            .collect();
        env.sort();
        // Each variable is checked on its own, so each wrong one is named.
        let mut wrong = Vec::new();
        for (var, value) in env {
            let key = &var["FIEF_".len()..];
            if NOT_CONFIG_KEYS.contains(&key)
                || NOT_CONFIG_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                continue;
            }
            let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
            let mut with = table.clone();
            set_path(&mut with, &path, env_value(&value));
            match Self::from_table(with.clone(), &var) {
                Ok(_) => table = with,
                Err(e) => wrong.push(ConfigError::Env {
                    var: var.clone(),
                    message: match e {
                        ConfigError::Parse { message, .. } => message,
                        other => other.to_string(),
                    },
                }),
            }
        }
        match wrong.len() {
            0 => {}
            1 => return Err(wrong.remove(0)),
            _ => return Err(ConfigError::Several(wrong)),
        }
        let mut config = Self::from_table(table, &source)?;
        if let Some(d) = &overrides.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = overrides.listen {
            config.listen = a;
        }
        if let Some(a) = overrides.admin_listen {
            config.admin_listen = a;
        }
        config.validate()?;
        let set = |var: &str| all.iter().any(|(k, v)| k == var && !v.is_empty());
        config.llm.validate(&set, true)?;
        Ok(config)
    }

    /// Defaults with `data_dir` and both listeners on ephemeral loopback
    /// ports, ignoring the environment: for the demo, tests and benchmarks.
    pub fn ephemeral(data_dir: &Path) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir: data_dir.to_owned(),
            listen: loopback,
            admin_listen: loopback,
            ..Self::default()
        }
    }

    fn from_table(table: toml::Table, source: &str) -> Result<Self, ConfigError> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: source.to_owned(),
                message: e.to_string(),
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let mut addrs = vec![self.listen, self.admin_listen];
        for island in &self.islands {
            if island.tenants.is_empty() {
                return invalid("an island must name at least one tenant");
            }
            if island.listen.port() != 0 && addrs.contains(&island.listen) {
                return invalid("every island needs its own listen address");
            }
            addrs.push(island.listen);
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes must be greater than 0");
        }
        if let Some(pg) = &self.postgres {
            if !(50..=60_000).contains(&pg.change_poll_ms) {
                return invalid("postgres.change_poll_ms must be between 50 and 60000");
            }
            if !(100..=60_000).contains(&pg.acquire_timeout_ms) {
                return invalid("postgres.acquire_timeout_ms must be between 100 and 60000");
            }
        }
        if self.models.silo_threads == 0 || self.models.silo_threads > 64 {
            return invalid("models.silo_threads must be between 1 and 64");
        }
        if self.models.max_silo_threads < self.models.silo_threads {
            return invalid("models.max_silo_threads must be at least models.silo_threads");
        }
        if self.models.silo_idle_secs == 0 {
            return invalid("models.silo_idle_secs must be at least 1");
        }
        if self.models.max_concurrent_loads == 0 {
            return invalid("models.max_concurrent_loads must be greater than 0");
        }
        if self.header_read_timeout_secs == 0 {
            return invalid("header_read_timeout_secs must be greater than 0");
        }
        if self.shutdown_grace_secs > 3600 {
            return invalid("shutdown_grace_secs must be at most 3600");
        }
        if self.request_timeout_secs == 0 {
            return invalid("request_timeout_secs must be greater than 0");
        }
        if !(1..=3600).contains(&self.audit.auth_failure_window_secs) {
            return invalid("audit.auth_failure_window_secs must be between 1 and 3600");
        }
        if self.audit.segment_bytes < 4096 || self.audit.segment_secs == 0 {
            return invalid(
                "audit.segment_bytes must be at least 4096 and audit.segment_secs at least 1",
            );
        }
        if !(1..=86_400).contains(&self.audit.anchor_secs) {
            return invalid("audit.anchor_secs must be between 1 and 86400");
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        // Environment variables are checked by `load`, which has them.
        self.llm.validate(&|_| true, false)?;
        self.quotas.validate()?;
        self.metering.validate(&self.pricing)?;
        self.logs.validate()?;
        if let Some(o) = &self.object_store {
            o.validate()?;
        }
        if let Some(r) = &self.redis {
            r.validate()?;
        }
        let k = &self.knowledge;
        if !(16..=254).contains(&k.chunk_tokens) {
            return invalid("knowledge.chunk_tokens must be between 16 and 254");
        }
        if k.chunk_overlap_tokens * 2 > k.chunk_tokens {
            return invalid("knowledge.chunk_overlap_tokens must be at most half of chunk_tokens");
        }
        if k.hnsw_threshold == 0 || k.max_top_k == 0 || k.max_top_k > 1000 {
            return invalid(
                "knowledge.hnsw_threshold must be at least 1 and knowledge.max_top_k between 1 and 1000",
            );
        }
        if let Some(u) = &k.upstream {
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return invalid("knowledge.upstream.url must be an http:// or https:// URL");
            }
            if u.model.is_empty() || u.dimensions == 0 || u.timeout_secs == 0 {
                return invalid(
                    "knowledge.upstream needs a model, dimensions > 0 and timeout_secs > 0",
                );
            }
        }
        if self.sts.max_session_secs < 60 || self.sts.max_session_secs > 12 * 3600 {
            return invalid("sts.max_session_secs must be between 60 and 43200");
        }
        if self.sts.default_session_secs < 60
            || self.sts.default_session_secs > self.sts.max_session_secs
        {
            return invalid("sts.default_session_secs must be between 60 and sts.max_session_secs");
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return invalid(
                "listen and admin_listen must differ: the admin plane has its own listener",
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML (for `--check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

impl OidcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("oidc: {m}")));
        if self.issuer.is_empty() {
            return invalid("issuer must not be empty".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return invalid("audiences must name at least one non-empty audience".into());
        }
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return invalid("set exactly one of jwks_file and jwks_url".into()),
        }
        if self.algorithms.is_empty() {
            return invalid("algorithms must pin at least one algorithm".into());
        }
        for alg in &self.algorithms {
            if !OIDC_ALGORITHMS.contains(&alg.as_str()) {
                return invalid(format!(
                    "algorithm {alg} is not accepted; use one of {}",
                    OIDC_ALGORITHMS.join(", ")
                ));
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return invalid(format!("leeway_secs must be at most {MAX_LEEWAY_SECS}"));
        }
        if self.tenant_claim.is_empty() {
            return invalid("tenant_claim must not be empty".into());
        }
        Ok(())
    }
}

/// Integers and booleans by their look; everything else is a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(raw.to_owned())
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fief.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nmax_body_bytes = 10\n[models]\ncache_bytes = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("FIEF_MAX_BODY_BYTES", "20"),
                ("FIEF_MODELS__CACHE_BYTES", "7"),
                ("FIEF_ADMIN_TOKEN", "x"),
                ("FIEF_TEST_DATABASE_URL", "y"),
                ("OTHER", "z"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:9000".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.max_body_bytes, 20);
        assert_eq!(c.models.cache_bytes, 7);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn oidc_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fief.toml");
        let base =
            "[oidc]\nissuer = \"https://idp\"\naudiences = [\"fief\"]\njwks_file = \"/k.json\"\n";
        for (extra, expect) in [
            ("algorithms = [\"RS256\"]\n", None),
            ("algorithms = [\"HS256\"]\n", Some("HS256 is not accepted")),
            ("algorithms = []\n", Some("pin at least one")),
            (
                "algorithms = [\"RS256\"]\nleeway_secs = 3600\n",
                Some("leeway_secs"),
            ),
            (
                "algorithms = [\"RS256\"]\njwks_url = \"https://idp/k\"\n",
                Some("exactly one"),
            ),
        ] {
            std::fs::write(&file, format!("{base}{extra}")).unwrap();
            let r = Config::load(Some(&file), env(&[]), &Overrides::default());
            match expect {
                None => assert!(r.is_ok(), "{extra}: {r:?}"),
                Some(m) => {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(m), "{extra}: {e}");
                }
            }
        }
    }

    #[test]
    fn every_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fief.toml");
        std::fs::write(
            &file,
            "listn = \"127.0.0.1:1\"\n\n[models]\ncache_byts = 5\n\n[[llm.upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/v1\"\nmodels = [{ id = \"m\" }]\nnme = \"x\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 unknown key(s)"), "{e}");
        assert!(
            e.contains("line 1: unknown key `listn`; did you mean `listen`?"),
            "{e}"
        );
        assert!(
            e.contains("line 4: unknown key `models.cache_byts`; did you mean `cache_bytes`?"),
            "{e}"
        );
        assert!(
            e.contains("line 10: unknown key `llm.upstreams[0].nme`; did you mean `name`?"),
            "{e}"
        );
    }

    #[test]
    fn every_wrong_environment_variable_is_named() {
        let e = Config::load(
            None,
            env(&[("FIEF_LISTN", "1.2.3.4:5"), ("FIEF_MAX_BODY_BYTE", "1")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("FIEF_LISTN") && e.contains("FIEF_MAX_BODY_BYTE"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fief.toml");
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_dri"), "{e}");
        let e = Config::load(
            None,
            env(&[("FIEF_LISTN", "1.2.3.4:5")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("FIEF_LISTN"), "{e}");
        let e = Config::load(
            None,
            env(&[("FIEF_LISTEN", "not an address")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("FIEF_LISTEN"), "{e}");
        assert!(Config::load(
            None,
            env(&[("FIEF_MAX_BODY_BYTES", "0")]),
            &Overrides::default()
        )
        .is_err());
    }
}
