//! The store: rows on SQLite (embedded, under the data directory) or
//! PostgreSQL (`[postgres]`), and an object store (`object_store`, local
//! file system) for artifacts; and the two capabilities that guard them.
//!
//! A [`Principal`] is made only by authentication (`authn.rs`) from a
//! verified credential, and a [`TenantScope`] only by the gate (`gate.rs`)
//! from an allowed decision on a principal: both have private constructors,
//! and they live here, next to the credentials they are checked against
//! and the data they protect (invariants 1 and 3).
//!
//! Two kinds of accessor live here. Platform accessors (tenants, API keys,
//! signing keys) hold no tenant content. Tenant-data accessors require a
//! [`TenantScope`]; they run on the tenant's place for its tier
//! (`placement.rs`), only while the scope's tenant incarnation is active,
//! and every statement filters by the scope's tenant. Tenant content is
//! sealed with the tenant incarnation's own data key (invariant 5).

mod api_keys;
mod audit;
mod authn;
mod changes;
mod db;
mod directory;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod gate;
mod knowledge;
mod logs;
mod models;
mod placement;
mod policies;
mod principal;
mod quotas;
mod tables;
mod tenants;
mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use fief_core::{Incarnation, TenantId};

use db::{q, Db};
use fief_crypto::{DataKey, MasterKey};
use fief_identity::{OidcVerifier, SessionSigner};
use placement::{Place, Placement};
use tenants::TenantStatus as Status;

pub use api_keys::{ApiKeyRecord, NewApiKey, KEY_PREFIX};
pub use authn::{AuthnError, CredentialKind};
pub use changes::{ChangeRow, CHANNEL};
pub use directory::Change;
pub use gate::{
    decide, decide_assume_role, AssumeRoleDecision, Decision, OffboardScope, SessionGrant,
    TenantScope,
};
pub use knowledge::{
    ChunkRecord, DocumentRecord, DocumentWrite, KnowledgeBaseRecord, NewChunk, OpenedChunks,
};
pub use logs::{LogAppend, LogConfig, LogQuery, SinkLease};
pub use models::{ModelRecord, PutOutcome};
pub use policies::{PolicyDocuments, PolicyRecord, RoleInput, RoleRecord};
pub use principal::Principal;
pub use quotas::QuotaView;
pub use tables::{Condition, Item, ItemPage};
pub use tenants::{TenantRecord, TenantStatus};
pub use usage::{StorageHeld, UsageFilter};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    #[error("encryption: {0}")]
    Crypto(#[from] fief_crypto::CryptoError),
    #[error("{0} already exists")]
    Conflict(String),
    /// The operation conflicts with the resource's state; the message says
    /// what to do.
    #[error("{0}")]
    State(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write's condition (a version, or absence) did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The tenant incarnation an operation was authorised for is no longer
    /// active (offboarded, or the id now names a later tenant).
    #[error("tenant {0} is no longer active")]
    TenantGone(String),
    /// The tenant moved to another tier while this request ran; a retry
    /// finds it in its new place.
    #[error("tenant {0} is moving to another tier; retry")]
    Moving(String),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// The database or object store could not be reached (or answered too
    /// late): worth a retry, a 503, not a bug. A constraint or a corrupt
    /// row is not this.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                // The server shut the connection, or the place is gone: a
                // tenant's schema or database dropped by a move or an
                // offboarding another replica made (the retry reads the
                // new place).
                Some("57P01" | "57P02" | "57P03" | "3D000" | "3F000" | "42P01")
            ),
            StoreError::Db(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            StoreError::Object(e) => matches!(e, object_store::Error::Generic { .. }),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    /// Platform tables: `fief.db`, or `fief_platform` on PostgreSQL.
    platform: Db,
    /// Where each tenant's content lives, by tier.
    placement: Placement,
    objects: Arc<dyn ObjectStore>,
    /// `[object_store]`, for silo tenants' own buckets (same endpoint,
    /// region and credentials, another bucket).
    objects_config: Option<fief_config::ObjectStoreConfig>,
    /// Those buckets' clients, by bucket name.
    own_buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    objects_root: PathBuf,
    master: MasterKey,
    /// Unwrapped data keys of tenant incarnations in use; dropped (and
    /// zeroed) on offboarding.
    data_keys: Mutex<HashMap<TenantId, (Incarnation, DataKey)>>,
    /// Session-token signing keys (loaded from `signing_keys`).
    sessions: SessionSigner,
    /// The identity provider's verifier, with `[oidc]`.
    oidc: Option<OidcVerifier>,
    /// The admin plane's bearer token.
    admin_token: String,
    /// Table items that failed to open under the caller's key.
    items_rejected: std::sync::atomic::AtomicU64,
    /// Keys, tenant states and model records as every request reads them.
    directory: directory::Directory,
    /// Per tenant: content operations hold it shared, a tier change or an
    /// offboarding holds it
    /// exclusively, so no operation runs on a place while the tenant's
    /// content moves out of it or is destroyed (within this process).
    moves: Mutex<HashMap<TenantId, Arc<tokio::sync::RwLock<()>>>>,
}

/// A tenant's place, held for one operation: a tier change waits for it.
pub(crate) struct Placed {
    place: Place,
    _moving: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl std::ops::Deref for Placed {
    type Target = Place;
    fn deref(&self) -> &Place {
        &self.place
    }
}

/// How to open a store.
pub struct StoreOptions<'a> {
    pub data_dir: &'a Path,
    pub master: MasterKey,
    /// Every row on PostgreSQL (objects stay under `data_dir` unless
    /// `objects` names a bucket).
    pub postgres: Option<&'a fief_config::PostgresConfig>,
    /// JWT bearer tokens from an identity provider.
    pub oidc: Option<fief_config::OidcConfig>,
    /// The admin plane's bearer token.
    pub admin_token: String,
    /// A silo tenant's database connections close after this long unused.
    pub silo_idle: std::time::Duration,
    /// Model bytes in an S3-compatible bucket; under `data_dir/objects`
    /// when absent.
    pub objects: Option<fief_config::ObjectStoreConfig>,
}

impl Store {
    /// Opens the store under `data_dir`, creating it and running
    /// migrations; on PostgreSQL it refuses a runtime role that row-level
    /// security would not bind.
    pub async fn open(options: StoreOptions<'_>) -> Result<Self> {
        let StoreOptions {
            data_dir,
            master,
            postgres,
            oidc,
            admin_token,
            silo_idle,
            objects,
        } = options;
        let io = |source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let objects_root = data_dir.join("objects");
        // Only the files backend uses it: a replica with a bucket keeps no
        // directory of its own.
        if objects.is_none() {
            std::fs::create_dir_all(&objects_root).map_err(io)?;
        }
        let oidc = match oidc {
            Some(c) => Some(
                OidcVerifier::new(c)
                    .await
                    .map_err(|e| StoreError::Config(format!("oidc: {e}")))?,
            ),
            None => None,
        };
        let (platform, placement) = match postgres {
            Some(_) if data_dir.join("fief.db").exists() => {
                // Rows of an embedded store would silently vanish from view.
                return Err(StoreError::Config(format!(
                    "{} holds an embedded (SQLite) store, and [postgres] is configured; fief does \
                     not move rows between backends. Start without [postgres], or use a new data \
                     directory",
                    data_dir.join("fief.db").display()
                )));
            }
            Some(config) => {
                let pg = placement::PgPlacement::open(config, silo_idle).await?;
                (pg.runtime.clone(), Placement::Pg(Box::new(pg)))
            }
            None => {
                let main = placement::sqlite_file(&data_dir.join("fief.db"), 8).await?;
                if let Db::Sqlite(pool) = &main {
                    sqlx::migrate!("./migrations").run(pool).await?;
                }
                let sqlite = placement::SqlitePlacement::new(main.clone(), data_dir, silo_idle);
                sqlite.upgrade_legacy_items().await?;
                (main, Placement::Sqlite(sqlite))
            }
        };
        let objects_config = objects.clone();
        let objects = open_objects(objects.as_ref(), &objects_root).await?;
        let store = Self {
            platform,
            placement,
            objects,
            objects_config,
            own_buckets: Mutex::new(HashMap::new()),
            objects_root,
            master,
            data_keys: Mutex::new(HashMap::new()),
            moves: Mutex::new(HashMap::new()),
            sessions: SessionSigner::new(),
            oidc,
            admin_token,
            items_rejected: std::sync::atomic::AtomicU64::new(0),
            directory: directory::Directory::default(),
        };
        store.rewrap_legacy_keys().await?;
        store.load_signing_keys().await?;
        Ok(store)
    }

    /// The place of the scope's tenant's content, by its current tier,
    /// held for one operation. Refuses when the scope's incarnation is no
    /// longer active: checked after the tenant's move lock is taken, and an
    /// offboarding takes that lock exclusively, so no operation authorised
    /// before an offboarding writes after it.
    async fn place(&self, scope: &TenantScope) -> Result<Placed> {
        self.place_of(scope.tenant(), Some(scope.incarnation()))
            .await
    }

    /// Refuses a scope whose incarnation is no longer active (for reads that
    /// need no place).
    async fn check_live(&self, scope: &TenantScope) -> Result<()> {
        let live = self.tenant_state(scope.tenant()).await?.is_some_and(|s| {
            s.status == Status::Active && live(Some(scope.incarnation()), &s.incarnation)
        });
        if live {
            Ok(())
        } else {
            Err(StoreError::TenantGone(scope.tenant().to_string()))
        }
    }

    /// [`place`](Self::place) for the store's own reads by tenant id (the
    /// authorisation layer's policy documents); `incarnation` `None` is the
    /// active one, whichever it is. Do not call it again while holding one:
    /// a waiting tier change would block the second.
    async fn place_of(
        &self,
        tenant: &TenantId,
        incarnation: Option<&Incarnation>,
    ) -> Result<Placed> {
        let moving = self.move_lock(tenant)?.read_owned().await;
        let state = self
            .tenant_state(tenant)
            .await?
            .filter(|s| s.status == Status::Active && live(incarnation, &s.incarnation))
            .ok_or_else(|| StoreError::TenantGone(tenant.to_string()))?;
        let mut place = self.placement.place(tenant, state.tier).await?;
        if let Db::Pg(_) = &self.platform {
            let own_database = state.tier == fief_core::Tier::Silo;
            place.fence = Some(placement::Fence {
                tier: state.tier,
                platform: own_database.then(|| self.platform.clone()),
            });
        }
        Ok(Placed {
            place,
            _moving: moving,
        })
    }

    fn move_lock(&self, tenant: &TenantId) -> Result<Arc<tokio::sync::RwLock<()>>> {
        let mut moves = self
            .moves
            .lock()
            .map_err(|_| StoreError::Corrupt("tier-move registry poisoned".into()))?;
        Ok(moves.entry(tenant.clone()).or_default().clone())
    }

    /// Forgets what `change` touched in the in-memory directory (for a
    /// change made elsewhere: another replica's).
    pub fn invalidate(&self, change: &Change) {
        self.directory.invalidate(change);
        match change {
            Change::Tenant(t) => self.placement.forget(t),
            Change::All => self.placement.forget_all(),
            Change::Key(_) | Change::Model(..) => {}
        }
    }

    /// A key for one platform purpose, derived from the master key.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        self.master.derive(purpose)
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        q("SELECT 1").exec(&self.platform).await?;
        Ok(())
    }

    /// Where `tenant`'s objects are: its own bucket, or the shared store.
    pub(crate) async fn objects_of(&self, tenant: &TenantId) -> Result<Arc<dyn ObjectStore>> {
        match self.tenant_state(tenant).await?.and_then(|s| s.bucket) {
            Some(bucket) => self.own_bucket(&bucket),
            None => Ok(self.objects.clone()),
        }
    }

    /// The client of a silo tenant's own bucket (objects under
    /// `tenants/{id}/` of it, as in the shared one).
    pub(crate) fn own_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let Some(c) = &self.objects_config else {
            return Err(StoreError::State(
                "a tenant's own bucket needs [object_store] (an S3-compatible endpoint)".into(),
            ));
        };
        let mut cached = self
            .own_buckets
            .lock()
            .map_err(|_| StoreError::State("bucket clients lock poisoned".into()))?;
        if let Some(b) = cached.get(bucket) {
            return Ok(b.clone());
        }
        let client: Arc<dyn ObjectStore> = Arc::new(s3_client(c, bucket)?);
        cached.insert(bucket.to_owned(), client.clone());
        Ok(client)
    }

    /// Readiness of the object store: a lookup of a name never written is
    /// answered (not found) by a reachable store.
    pub async fn ping_objects(&self) -> Result<()> {
        match self.objects.head(&ObjectPath::from("fief-readyz")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A key for one purpose of the scope's tenant, derived from its data
    /// key (the keyword index's term hashes): unrelated across tenants,
    /// gone with the tenant.
    pub async fn tenant_derived_key(&self, scope: &TenantScope, purpose: &str) -> Result<[u8; 32]> {
        Ok(self.data_key(scope).await?.derive(purpose))
    }

    /// The tenant incarnation's data key, unwrapped on first use. Requires
    /// a scope: only an authorised request can cause a key to be unwrapped.
    async fn data_key(&self, scope: &TenantScope) -> Result<DataKey> {
        let (tenant, incarnation) = (scope.tenant(), scope.incarnation());
        if let Some(k) = self.cached_key(tenant, incarnation) {
            return Ok(k);
        }
        let row =
            q("SELECT wrapped_key, incarnation FROM tenants WHERE id = $1 AND status = 'active'")
                .bind(tenant.as_str())
                .opt(&self.platform)
                .await?
                .ok_or_else(|| StoreError::TenantGone(tenant.to_string()))?;
        let current: String = row.get("incarnation")?;
        let current =
            Incarnation::parse(&current).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if !live(Some(incarnation), &current) {
            return Err(StoreError::TenantGone(tenant.to_string()));
        }
        let wrapped: Vec<u8> = row.get("wrapped_key")?;
        let key = DataKey::unwrap(&self.master, tenant, &current, &wrapped)?;
        if let Ok(mut keys) = self.data_keys.lock() {
            keys.insert(tenant.clone(), (current, key.clone()));
        }
        Ok(key)
    }

    fn cached_key(&self, tenant: &TenantId, incarnation: &Incarnation) -> Option<DataKey> {
        let keys = self.data_keys.lock().ok()?;
        match keys.get(tenant) {
            Some((inc, key)) if live(Some(incarnation), inc) => Some(key.clone()),
            _ => None,
        }
    }

    fn forget_key(&self, tenant: &TenantId) {
        if let Ok(mut keys) = self.data_keys.lock() {
            keys.remove(tenant);
        }
    }
}

/// Whether the active incarnation `current` is the one an operation was
/// authorised for (`None`: any active one). The fault-injection build can
/// take scopes from addresses, which carry the caller's incarnation.
fn live(expected: Option<&Incarnation>, current: &Incarnation) -> bool {
    #[cfg(feature = "fault-injection")]
    if faults::scope_from_address() {
        return true;
    }
    expected.is_none_or(|e| e == current)
}

/// A client of `bucket` on the configured endpoint, with the deployment's
/// credentials (from the environment).
fn s3_client(
    c: &fief_config::ObjectStoreConfig,
    bucket: &str,
) -> Result<object_store::aws::AmazonS3> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&c.region)
        // Audit anchors are created, never replaced (If-None-Match).
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
        // A bucket that is away fails the operation within the bound
        // instead of retrying for minutes behind a waiting request.
        .with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: std::time::Duration::from_millis(c.retry_timeout_ms),
        })
        // (The client options carry allow_http too: set them once, here.)
        .with_client_options(
            object_store::ClientOptions::new()
                .with_allow_http(c.allow_http)
                .with_connect_timeout(std::time::Duration::from_millis(c.retry_timeout_ms)),
        );
    if let Some(e) = &c.endpoint {
        // S3-compatible servers rarely have per-bucket host names.
        builder = builder
            .with_endpoint(e)
            .with_virtual_hosted_style_request(false);
    }
    Ok(builder.build()?)
}

/// The object store: a bucket when configured (checked reachable now, so
/// bad credentials stop start-up), else files under the data directory.
async fn open_objects(
    config: Option<&fief_config::ObjectStoreConfig>,
    root: &Path,
) -> Result<Arc<dyn ObjectStore>> {
    let Some(c) = config else {
        return Ok(Arc::new(
            LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true),
        ));
    };
    let (bucket, prefix) = c
        .bucket_and_prefix()
        .map_err(|e| StoreError::Config(e.to_string()))?;
    let s3 = s3_client(c, &bucket)?;
    let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
    };
    let probe = ObjectPath::from("tenants");
    if let Some(Err(e)) = objects.list(Some(&probe)).next().await {
        return Err(StoreError::Config(format!(
            "object_store: bucket {bucket} cannot be listed: {e}"
        )));
    }
    Ok(objects)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
