//! The store: rows on SQLite (embedded, under the data directory) or
//! PostgreSQL (`[postgres]`), and an object store (`object_store`, local
//! file system) for artifacts.
//!
//! Two kinds of accessor live here. Platform accessors (tenants, API keys,
//! signing keys) hold no tenant content. Tenant-data accessors require a
//! [`TenantScope`], which only the authorisation layer can mint
//! (invariant 3); they run on the tenant's place for its tier
//! (`placement.rs`) and every statement filters by the scope's tenant.
//! Tenant content is sealed with the tenant's data key (invariant 5).

mod api_keys;
mod db;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod knowledge;
mod models;
mod placement;
mod policies;
mod tables;
mod tenants;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use fief_core::{TenantId, Tier};

use db::{q, Db};
use fief_crypto::{DataKey, MasterKey};
use placement::{Place, Placement};

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
    /// Platform tables: `fief.db`, or `fief_platform` on PostgreSQL.
    platform: Db,
    /// Where each tenant's content lives, by tier.
    placement: Placement,
    objects: Arc<dyn ObjectStore>,
    objects_root: PathBuf,
    master: MasterKey,
    /// Unwrapped data keys of tenants in use; dropped (and zeroed) on offboarding.
    data_keys: Mutex<HashMap<TenantId, DataKey>>,
    /// Per tenant: content operations hold it shared, a tier change holds it
    /// exclusively, so no operation runs on a place while the tenant's
    /// content moves out of it (within this process).
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

impl Store {
    /// Opens the embedded store under `data_dir`, creating it and running
    /// migrations.
    pub async fn open(data_dir: &Path, master: MasterKey) -> Result<Self> {
        Self::open_with(data_dir, master, None).await
    }

    /// Like [`open`](Self::open), with every row on PostgreSQL when
    /// `postgres` is `(runtime URL, admin URL)`; objects stay under
    /// `data_dir`. Refuses a runtime role that row-level security would not
    /// bind.
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
            Some((url, admin)) => {
                let pg = placement::PgPlacement::open(url, admin).await?;
                (pg.runtime.clone(), Placement::Pg(Box::new(pg)))
            }
            None => {
                let main = placement::sqlite_file(&data_dir.join("fief.db"), 8).await?;
                if let Db::Sqlite(pool) = &main {
                    sqlx::migrate!("./migrations").run(pool).await?;
                }
                let sqlite = placement::SqlitePlacement::new(main.clone(), data_dir);
                sqlite.upgrade_legacy_items().await?;
                (main, Placement::Sqlite(sqlite))
            }
        };
        let objects = LocalFileSystem::new_with_prefix(&objects_root)?.with_automatic_cleanup(true);
        Ok(Self {
            platform,
            placement,
            objects: Arc::new(objects),
            objects_root,
            master,
            data_keys: Mutex::new(HashMap::new()),
            moves: Mutex::new(HashMap::new()),
        })
    }

    /// The place of the scope's tenant's content, by its current tier.
    async fn place(&self, scope: &TenantScope) -> Result<Placed> {
        self.place_of(scope.tenant()).await
    }

    /// [`place`](Self::place) for the store's own reads by tenant id (the
    /// authorisation layer's policy documents). Do not call it again while
    /// holding one: a waiting tier change would block the second.
    async fn place_of(&self, tenant: &TenantId) -> Result<Placed> {
        let moving = self.move_lock(tenant)?.read_owned().await;
        let place = self
            .placement
            .place(tenant, self.tier_of(tenant).await?)
            .await?;
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

    async fn tier_of(&self, tenant: &TenantId) -> Result<Tier> {
        self.get_tenant(tenant)
            .await?
            .map(|t| t.tier)
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<()> {
        q("SELECT 1").exec(&self.platform).await?;
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
        let row = q("SELECT wrapped_key FROM tenants WHERE id = $1 AND status = 'active'")
            .bind(tenant.as_str())
            .opt(&self.platform)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))?;
        let wrapped: Vec<u8> = row.get("wrapped_key")?;
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
