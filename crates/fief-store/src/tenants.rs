//! Tenants: platform metadata, managed by the operator. Each onboarding
//! makes a new incarnation; offboarding is a fence that no request outlives
//! (see [`Store::begin_offboarding`] and [`Store::finish_offboarding`]).

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use rand::RngCore;
use serde::Serialize;

use fief_config::{Limits, QuotaSettings};
use fief_core::{Incarnation, Tags, TenantId, Tier};
use fief_crypto::DataKey;

use crate::api_keys::{insert_key, NewApiKey};
use crate::authn::now_ms;
use crate::db::{q, Db, Row};
use crate::directory::Change;
use crate::gate::OffboardScope;
use crate::principal::Principal;
use crate::{now, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    /// Keys revoked, new requests refused, data being destroyed; a retry of
    /// the delete finishes it.
    Offboarding,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantRecord {
    pub id: TenantId,
    /// This onboarding of the id; a later tenant with the same id has another.
    pub incarnation: Incarnation,
    pub tier: Tier,
    pub tags: Tags,
    pub status: TenantStatus,
    pub created_at: String,
    /// The operator's foundation-model allowlist (model names or
    /// `Key=Value` tag matches); `None`: every model open to the tenant.
    pub llm_models: Option<Vec<String>>,
    /// The operator's quota settings of the tenant; unset values are its
    /// tier's defaults.
    pub quotas: Option<QuotaSettings>,
    /// A silo tenant's own bucket for its objects; `None`: the shared one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// Platform tables with rows keyed by `tenant_id` that offboarding deletes
/// (the hourly usage sums stay: invoices need them, and they hold no content).
const PLATFORM_ROWS: [&str; 5] = [
    "api_keys",
    "quota_limits",
    "quota_spend",
    "usage_events",
    "log_config",
];

/// What authentication and placement need to know of a tenant.
#[derive(Debug, Clone)]
pub(crate) struct TenantState {
    pub tier: Tier,
    pub status: TenantStatus,
    pub incarnation: Incarnation,
    pub created_ms: i64,
    /// When an earlier incarnation of the same id was offboarded.
    pub reused_after_ms: Option<i64>,
    pub llm_models: Option<Arc<[String]>>,
    pub quotas: Option<QuotaSettings>,
    /// The tenant's own lower limits, by subject (`role:…`, `api-key:…`, `user:…`).
    pub subject_quotas: Arc<HashMap<String, Limits>>,
    /// Its tags now (usage events keep them as they were at each request).
    pub tags: Arc<Tags>,
    /// Its own bucket, if it has one.
    pub bucket: Option<String>,
}

const COLUMNS: &str = "id, incarnation, tier, tags, status, created_at, llm_models, quotas, bucket";

pub(crate) fn quotas(row: &Row) -> Result<Option<QuotaSettings>> {
    let raw: Option<String> = row.get("quotas")?;
    raw.map(|r| serde_json::from_str(&r).map_err(|e| corrupt("quotas", &e)))
        .transpose()
}

fn llm_models(row: &Row) -> Result<Option<Vec<String>>> {
    let raw: Option<String> = row.get("llm_models")?;
    raw.map(|r| serde_json::from_str(&r).map_err(|e| corrupt("llm_models", &e)))
        .transpose()
}

fn corrupt(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("tenant {what}: {e}"))
}

fn status(row: &Row) -> Result<TenantStatus> {
    let status: String = row.get("status")?;
    Ok(if status == "active" {
        TenantStatus::Active
    } else {
        TenantStatus::Offboarding
    })
}

fn incarnation(row: &Row) -> Result<Incarnation> {
    let raw: String = row.get("incarnation")?;
    Incarnation::parse(&raw).map_err(|e| corrupt("incarnation", &e))
}

fn from_row(row: &Row) -> Result<TenantRecord> {
    let id: String = row.get("id")?;
    let tier: String = row.get("tier")?;
    let tags: String = row.get("tags")?;
    Ok(TenantRecord {
        id: TenantId::parse(&id).map_err(|e| corrupt("id", &e))?,
        incarnation: incarnation(row)?,
        tier: tier.parse().map_err(|e| corrupt("tier", &e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt("tags", &e))?,
        status: status(row)?,
        created_at: row.get("created_at")?,
        llm_models: llm_models(row)?,
        quotas: quotas(row)?,
        bucket: row.get("bucket")?,
    })
}

fn new_incarnation() -> Incarnation {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    Incarnation::from_random(raw)
}

impl Store {
    /// Creates a tenant (a new incarnation), its data key and its first API
    /// key in one transaction. The id must hold nothing of an earlier
    /// tenant: an offboarding still under way is a conflict, and so is any
    /// content left in the id's places.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        tier: Tier,
        tags: &Tags,
    ) -> Result<(TenantRecord, NewApiKey)> {
        if let Some(existing) = self.get_tenant(id).await? {
            return Err(match existing.status {
                TenantStatus::Active => StoreError::Conflict(format!("tenant {id}")),
                TenantStatus::Offboarding => StoreError::State(format!(
                    "tenant {id} is being offboarded; repeat DELETE /admin/v1/tenants/{id} to \
                     finish, then create it again"
                )),
            });
        }
        let left = self.residue(id).await?;
        if !left.is_empty() {
            return Err(StoreError::State(format!(
                "the id {id} still holds data of an earlier tenant ({}); \
                 DELETE /admin/v1/tenants/{id} removes it",
                left.join(", ")
            )));
        }
        let incarnation = new_incarnation();
        let wrapped = DataKey::generate().wrap(&self.master, id, &incarnation)?;
        let created_at = now();
        let tags_json =
            serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let reused_after: Option<i64> =
            q("SELECT MAX(offboarded_ms) AS t FROM offboarded_tenants WHERE id = $1")
                .bind(id.as_str())
                .one(&self.platform)
                .await?
                .get("t")?;
        let mut tx = self.platform.begin().await?;
        let inserted = q(
            "INSERT INTO tenants (id, incarnation, tier, tags, status, wrapped_key, key_format,
                 created_at, created_ms, reused_after_ms)
             VALUES ($1, $2, $3, $4, 'active', $5, 2, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(incarnation.as_str())
        .bind(tier.as_str())
        .bind(&tags_json)
        .bind(wrapped)
        .bind(&created_at)
        .bind(now_ms())
        .bind(reused_after)
        .exec(&mut tx)
        .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("tenant {id}")));
        }
        let key = insert_key(
            &mut tx,
            &self.master,
            id,
            &incarnation,
            "initial",
            None,
            &Tags::new(),
        )
        .await?;
        tx.commit().await?;
        self.changed(id);
        let record = TenantRecord {
            id: id.clone(),
            incarnation,
            tier,
            tags: tags.clone(),
            status: TenantStatus::Active,
            created_at,
            llm_models: None,
            quotas: None,
            bucket: None,
        };
        Ok((record, key))
    }

    /// Changes a tenant's tier and/or tags. A tier change moves the tenant's
    /// content to the new tier's place: copied there before the switch,
    /// removed from the old one after it, so an interruption leaves a copy,
    /// never a loss. Objects and the key stay where they are.
    /// `llm_models`: `Some(None)` removes the allowlist.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        tier: Option<Tier>,
        tags: Option<&Tags>,
        llm_models: Option<Option<&[String]>>,
    ) -> Result<TenantRecord> {
        let tags_json = tags
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // No content operation of this tenant runs during the move.
        let _moving = self.move_lock(id)?.write_owned().await;
        let before = self
            .get_tenant(id)
            .await?
            .filter(|t| t.status == TenantStatus::Active)
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))?;
        let moving = match tier {
            Some(to) if to != before.tier => Some((before.tier, to)),
            _ => None,
        };
        if let (Some(_), Some(bucket)) = (moving, &before.bucket) {
            return Err(StoreError::State(format!(
                "tenant {id} keeps its objects in its own bucket {bucket}: move them back first \
                 (PATCH {{\"bucket\": null}}), then change its tier"
            )));
        }
        if let Some((_, to)) = moving {
            // A leftover copy from an interrupted move goes first.
            self.placement.drop_tenant(id, to).await?;
        }
        // Every replica's requests of the tenant wait while this is held.
        let fenced = match moving {
            Some((from, to)) => Some(self.placement.copy(id, from, to).await?),
            None => None,
        };
        let done = q(
            "UPDATE tenants SET tier = COALESCE($1, tier), tags = COALESCE($2, tags)
             WHERE id = $3 AND incarnation = $4 AND status = 'active'",
        )
        .bind(tier.map(Tier::as_str))
        .bind(tags_json)
        .bind(id.as_str())
        .bind(before.incarnation.as_str())
        .exec(&self.platform)
        .await?;
        if let Some(models) = llm_models {
            let json = models
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            q("UPDATE tenants SET llm_models = $1
               WHERE id = $2 AND incarnation = $3 AND status = 'active'")
            .bind(json)
            .bind(id.as_str())
            .bind(before.incarnation.as_str())
            .exec(&self.platform)
            .await?;
        }
        self.changed(id);
        if let Some(read) = fenced {
            read.commit().await?;
        }
        if done == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        if let Some((from, _)) = moving {
            self.placement.drop_tenant(id, from).await?;
        }
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    /// Gives a silo tenant a bucket of its own (`None`: back to the shared
    /// one). Its objects are copied to the new bucket before the switch and
    /// removed from the old after it, under the tenant's move lock, so no
    /// upload or read of it runs meanwhile and an interruption leaves a
    /// copy, never a loss.
    pub async fn set_tenant_bucket(
        &self,
        id: &TenantId,
        bucket: Option<&str>,
    ) -> Result<TenantRecord> {
        let _moving = self.move_lock(id)?.write_owned().await;
        let before = self
            .get_tenant(id)
            .await?
            .filter(|t| t.status == TenantStatus::Active)
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))?;
        if bucket.is_some() && before.tier != Tier::Silo {
            return Err(StoreError::State(format!(
                "a bucket of its own is for silo tenants; tenant {id} is {}",
                before.tier
            )));
        }
        if before.bucket.as_deref() == bucket {
            return Ok(before);
        }
        let from = self.objects_of(id).await?;
        let to = match bucket {
            Some(b) => {
                let to = self.own_bucket(b)?;
                // Reachable and listable with the deployment's credentials.
                let probe = ObjectPath::from("tenants");
                if let Some(Err(e)) = to.list(Some(&probe)).next().await {
                    return Err(StoreError::State(format!(
                        "bucket {b} cannot be listed: {e}"
                    )));
                }
                to
            }
            None => self.objects.clone(),
        };
        let prefix = ObjectPath::from(format!("tenants/{id}"));
        let objects: Vec<_> = from.list(Some(&prefix)).try_collect().await?;
        for meta in &objects {
            let bytes = from.get(&meta.location).await?.bytes().await?;
            to.put(&meta.location, object_store::PutPayload::from(bytes))
                .await?;
        }
        q("UPDATE tenants SET bucket = $1 WHERE id = $2 AND incarnation = $3 AND status = 'active'")
            .bind(bucket)
            .bind(id.as_str())
            .bind(before.incarnation.as_str())
            .exec(&self.platform)
            .await?;
        self.changed(id);
        for meta in &objects {
            from.delete(&meta.location).await?;
        }
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = q(format!("SELECT {COLUMNS} FROM tenants ORDER BY id"))
            .all(&self.platform)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        let row = q(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .opt(&self.platform)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The tenant's tier, status and incarnation: from the directory, or
    /// the database on a miss.
    pub(crate) async fn tenant_state(&self, id: &TenantId) -> Result<Option<TenantState>> {
        if let Some(state) = self.directory.tenant(id) {
            return Ok(Some(state));
        }
        let epoch = self.directory.epoch();
        let row = q(
            "SELECT tier, status, incarnation, created_ms, reused_after_ms, llm_models, quotas, tags,
             bucket FROM tenants WHERE id = $1",
        )
        .bind(id.as_str())
        .opt(&self.platform)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let tier: String = row.get("tier")?;
        let incarnation = incarnation(&row)?;
        let subject_quotas = self.load_subject_quotas(id, &incarnation).await?;
        let state = TenantState {
            tier: tier.parse().map_err(|e| corrupt("tier", &e))?,
            status: status(&row)?,
            incarnation,
            created_ms: row.get("created_ms")?,
            reused_after_ms: row.get("reused_after_ms")?,
            llm_models: llm_models(&row)?.map(Into::into),
            quotas: quotas(&row)?,
            subject_quotas: Arc::new(subject_quotas),
            tags: Arc::new({
                let raw: String = row.get("tags")?;
                serde_json::from_str(&raw).map_err(|e| corrupt("tags", &e))?
            }),
            bucket: row.get("bucket")?,
        };
        self.directory.keep_tenant(epoch, id, state.clone());
        Ok(Some(state))
    }

    /// The operator's foundation-model allowlist of the principal's own
    /// tenant (from the directory: no database round trip when warm).
    pub async fn llm_allowlist(&self, principal: &Principal) -> Result<Option<Arc<[String]>>> {
        let Some(tenant) = principal.tenant() else {
            return Ok(None);
        };
        Ok(self.tenant_state(tenant).await?.and_then(|s| s.llm_models))
    }

    pub(crate) fn changed(&self, id: &TenantId) {
        self.directory.invalidate(&Change::Tenant(id.clone()));
    }

    /// Offboarding, first half: the tenant is marked offboarding and every
    /// key revoked, so authentication refuses all its credentials from now
    /// on. Returns the incarnation being offboarded, or `None` if no tenant
    /// has the id (then [`finish_offboarding`](Self::finish_offboarding)
    /// removes whatever an earlier tenant left). The caller drains the
    /// tenant's in-flight requests before the second half.
    pub async fn begin_offboarding(&self, scope: &OffboardScope) -> Result<Option<Incarnation>> {
        let tenant = scope.tenant();
        let Some(record) = self.get_tenant(tenant).await? else {
            return Ok(None);
        };
        let mut tx = self.platform.begin().await?;
        q("UPDATE tenants SET status = 'offboarding' WHERE id = $1 AND incarnation = $2")
            .bind(tenant.as_str())
            .bind(record.incarnation.as_str())
            .exec(&mut tx)
            .await?;
        q("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        tx.commit().await?;
        // From here on no credential of the tenant is accepted.
        self.changed(tenant);
        Ok(Some(record.incarnation))
    }

    /// Offboarding, second half: with the tenant's move lock held
    /// exclusively (so no content operation is running, and every later one
    /// finds the tenant gone), deletes its content in every tier's place,
    /// its objects, then its rows and the wrapped data key (so any copy of
    /// its bytes left anywhere no longer decrypts). Records the offboarded
    /// incarnation. Safe to retry after a failure.
    pub async fn finish_offboarding(&self, scope: OffboardScope) -> Result<()> {
        let tenant = scope.tenant();
        let _fence = self.move_lock(tenant)?.write_owned().await;
        let record = self.get_tenant(tenant).await?;
        if record
            .as_ref()
            .is_some_and(|r| r.status == TenantStatus::Active)
        {
            return Err(StoreError::State(format!(
                "tenant {tenant} is active; offboarding must begin first"
            )));
        }
        self.forget_key(tenant);
        // Content wherever any tier would have put it.
        for tier in [Tier::Pool, Tier::Bridge, Tier::Silo] {
            self.placement.drop_tenant(tenant, tier).await?;
        }
        let prefix = ObjectPath::from(format!("tenants/{tenant}"));
        let store = self.objects_of(tenant).await?;
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        for meta in objects {
            store.delete(&meta.location).await?;
        }
        // Empty directories are not objects, but leave no trace of the tenant.
        let dir = self.objects_root.join("tenants").join(tenant.as_str());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        }
        // Last, the wrapped key: a retry can still find the tenant until here.
        let mut tx = self.platform.begin().await?;
        if let Some(r) = &record {
            q("INSERT INTO offboarded_tenants (id, incarnation, offboarded_ms) VALUES ($1, $2, $3)
               ON CONFLICT (id, incarnation) DO NOTHING")
            .bind(tenant.as_str())
            .bind(r.incarnation.as_str())
            .bind(now_ms())
            .exec(&mut tx)
            .await?;
        }
        // Raw usage events go; the hourly sums an invoice needs stay (counts, no content).
        for table in PLATFORM_ROWS {
            q(format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(tenant.as_str())
                .exec(&mut tx)
                .await?;
        }
        q("DELETE FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        tx.commit().await?;
        self.changed(tenant);
        if let Db::Sqlite(_) = self.platform {
            q("PRAGMA wal_checkpoint(TRUNCATE)")
                .exec(&self.platform)
                .await?;
        }
        Ok(())
    }

    /// Every active tenant with its incarnation, in id order (for upkeep
    /// that visits each: retention, the storage sample).
    pub(crate) async fn active_incarnations(&self) -> Result<Vec<(TenantId, Incarnation)>> {
        let rows = q("SELECT id, incarnation FROM tenants WHERE status = 'active' ORDER BY id")
            .all(&self.platform)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get("id")?;
            let inc: String = row.get("incarnation")?;
            if let (Ok(tenant), Ok(incarnation)) = (TenantId::parse(&id), Incarnation::parse(&inc))
            {
                out.push((tenant, incarnation));
            }
        }
        Ok(out)
    }

    /// Everything the store still holds for a tenant id, named: platform
    /// rows, content in any tier's place (rows, tables, schema, file,
    /// database), objects. Empty after offboarding; creation checks it, and
    /// operators and tests can too.
    pub async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let rows = PLATFORM_ROWS.iter().map(|t| (*t, "tenant_id"));
        for (table, column) in std::iter::once(("tenants", "id")).chain(rows) {
            let n: i64 = q(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"
            ))
            .bind(tenant.as_str())
            .one(&self.platform)
            .await?
            .get("n")?;
            if n > 0 {
                found.push(format!("{n} rows in {table}"));
            }
        }
        found.extend(self.placement.residue(tenant).await?);
        let prefix = ObjectPath::from(format!("tenants/{tenant}"));
        let objects: Vec<_> = self
            .objects_of(tenant)
            .await?
            .list(Some(&prefix))
            .try_collect()
            .await?;
        found.extend(objects.iter().map(|o| format!("object {}", o.location)));
        Ok(found)
    }

    /// Rewraps data keys of the first format (bound to the tenant id only)
    /// so they are bound to the tenant's incarnation too. Runs at start-up.
    pub(crate) async fn rewrap_legacy_keys(&self) -> Result<()> {
        let rows = q("SELECT id, incarnation, wrapped_key FROM tenants WHERE key_format = 1")
            .all(&self.platform)
            .await?;
        for row in rows {
            let id: String = row.get("id")?;
            let id = TenantId::parse(&id).map_err(|e| corrupt("id", &e))?;
            let incarnation = incarnation(&row)?;
            let wrapped: Vec<u8> = row.get("wrapped_key")?;
            let key = DataKey::unwrap_legacy(&self.master, &id, &wrapped)?;
            q("UPDATE tenants SET wrapped_key = $1, key_format = 2 WHERE id = $2 AND key_format = 1")
                .bind(key.wrap(&self.master, &id, &incarnation)?)
                .bind(id.as_str())
                .exec(&self.platform)
                .await?;
        }
        Ok(())
    }
}
