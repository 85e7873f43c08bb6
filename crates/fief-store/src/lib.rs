//! The embedded store: SQLite (sqlx) for metadata and an object store
//! (`object_store`, local file system) for artifacts, both under the data
//! directory.
//!
//! Two kinds of accessor live here. Platform accessors (tenants, API keys)
//! hold no tenant content. Tenant-data accessors require a
//! [`TenantScope`], which only the authorisation layer can mint
//! (invariant 3), and every query they run filters by that scope's tenant.
//! Tenant content is sealed with the tenant's data key (invariant 5).

mod api_keys;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod knowledge;
mod models;
mod policies;
mod postgres;
mod tables;
mod tenants;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

use fief_core::TenantId;
use fief_crypto::{DataKey, MasterKey};

pub use api_keys::{ApiKeyRecord, NewApiKey, KEY_PREFIX};
pub use fief_policy::TenantScope;
pub use knowledge::{
    ChunkRecord, DocumentRecord, DocumentWrite, KnowledgeBaseRecord, NewChunk, OpenedChunks,
};
pub use models::{ModelRecord, PutOutcome};
pub use policies::{PolicyDocuments, PolicyRecord, RoleInput, RoleRecord};
pub use tables::{Item, ItemPage};
pub use tenants::{TenantRecord, TenantStatus};

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
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    db: SqlitePool,
    objects: Arc<dyn ObjectStore>,
    objects_root: PathBuf,
    data_dir: PathBuf,
    silo_files: tables::SiloFiles,
    /// Tenant tables on PostgreSQL, when configured (else SQLite).
    pg: Option<postgres::PgTables>,
    master: MasterKey,
    /// Unwrapped data keys of tenants in use; dropped (and zeroed) on offboarding.
    data_keys: Mutex<HashMap<TenantId, DataKey>>,
}

impl Store {
    /// Opens the store under `data_dir`, creating it and running migrations.
    pub async fn open(data_dir: &Path, master: MasterKey) -> Result<Self> {
        Self::open_with(data_dir, master, None).await
    }

    /// Like [`open`](Self::open), with the tenant tables on PostgreSQL:
    /// `(runtime URL, admin URL)`. Refuses a runtime role that row-level
    /// security would not bind.
    pub async fn open_with(
        data_dir: &Path,
        master: MasterKey,
        postgres: Option<(&str, &str)>,
    ) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let objects_root = data_dir.join("objects");
        std::fs::create_dir_all(&objects_root).map_err(io)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("fief.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Deleted rows (chunks, models, keys) are zeroed on disk, not
            // left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(std::time::Duration::from_secs(5));
        let db = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&db).await?;
        let objects = LocalFileSystem::new_with_prefix(&objects_root)?.with_automatic_cleanup(true);
        Ok(Self {
            db,
            objects: Arc::new(objects),
            objects_root,
            data_dir: data_dir.to_owned(),
            silo_files: tables::SiloFiles::default(),
            pg: match postgres {
                Some((url, admin)) => Some(postgres::PgTables::open(url, admin).await?),
                None => None,
            },
            master,
            data_keys: Mutex::new(HashMap::new()),
        })
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.db).await?;
        Ok(())
    }

    /// The tenant's data key, unwrapped on first use. Requires a scope: only
    /// an authorised request can cause a key to be unwrapped.
    async fn data_key(&self, scope: &TenantScope) -> Result<DataKey> {
        self.data_key_of(scope.tenant()).await
    }

    async fn data_key_of(&self, tenant: &TenantId) -> Result<DataKey> {
        if let Some(k) = self.cached_key(tenant) {
            return Ok(k);
        }
        let wrapped: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT wrapped_key FROM tenants WHERE id = ? AND status = 'active'")
                .bind(tenant.as_str())
                .fetch_optional(&self.db)
                .await?;
        let (wrapped,) = wrapped.ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))?;
        let key = DataKey::unwrap(&self.master, tenant, &wrapped)?;
        if let Ok(mut keys) = self.data_keys.lock() {
            keys.insert(tenant.clone(), key.clone());
        }
        Ok(key)
    }

    fn cached_key(&self, tenant: &TenantId) -> Option<DataKey> {
        self.data_keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(tenant).cloned())
    }

    fn forget_key(&self, tenant: &TenantId) {
        if let Ok(mut keys) = self.data_keys.lock() {
            keys.remove(tenant);
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
