//! Quota settings and budget spend, platform metadata next to the tenant
//! record: the operator's settings of each tenant (a column of `tenants`),
//! the lower limits a tenant sets for its own roles, keys and users
//! (`quota_limits`, written only under the tenant's scope), and each
//! level's budget spend per calendar month (`quota_spend`), which admission
//! seeds its counters from. Every change invalidates the directory entry
//! admission reads, so this node sees it on the next request.

use std::collections::HashMap;
use std::sync::Arc;

use fief_config::{Limits, QuotaSettings};
use fief_core::{Incarnation, TenantId, Tier};

use crate::db::q;
use crate::gate::TenantScope;
use crate::principal::Principal;
use crate::tenants::{TenantRecord, TenantStatus};
use crate::{Result, Store, StoreError};

/// What admission needs of a principal's tenant.
#[derive(Debug, Clone)]
pub struct QuotaView {
    pub tier: Tier,
    pub quotas: Option<QuotaSettings>,
    pub subjects: Arc<HashMap<String, Limits>>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Replaces the operator's quota settings of an active tenant (`None`:
    /// the tier's defaults only).
    pub async fn set_tenant_quotas(
        &self,
        id: &TenantId,
        quotas: Option<&QuotaSettings>,
    ) -> Result<TenantRecord> {
        let raw = quotas.map(json).transpose()?;
        let done = q("UPDATE tenants SET quotas = $1 WHERE id = $2 AND status = 'active'")
            .bind(raw)
            .bind(id.as_str())
            .exec(&self.platform)
            .await?;
        self.changed(id);
        if done == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        self.get_tenant(id)
            .await?
            .filter(|t| t.status == TenantStatus::Active)
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    /// The principal's tenant's quota settings, from the directory (no
    /// database round trip when warm).
    pub async fn quota_view(&self, principal: &Principal) -> Result<Option<QuotaView>> {
        let Some(tenant) = principal.tenant() else {
            return Ok(None);
        };
        Ok(self.tenant_state(tenant).await?.map(|s| QuotaView {
            tier: s.tier,
            quotas: s.quotas,
            subjects: s.subject_quotas,
        }))
    }

    pub(crate) async fn load_subject_quotas(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Result<HashMap<String, Limits>> {
        let rows = q("SELECT subject, limits FROM quota_limits
                      WHERE tenant_id = $1 AND incarnation = $2")
        .bind(tenant.as_str())
        .bind(incarnation.as_str())
        .all(&self.platform)
        .await?;
        let mut out = HashMap::new();
        for row in rows {
            let subject: String = row.get("subject")?;
            let raw: String = row.get("limits")?;
            let limits = serde_json::from_str(&raw)
                .map_err(|e| StoreError::Corrupt(format!("quota limits of {subject}: {e}")))?;
            out.insert(subject, limits);
        }
        Ok(out)
    }

    /// The scope tenant's own limits for its roles, keys and users.
    pub async fn subject_quotas(&self, scope: &TenantScope) -> Result<Vec<(String, Limits)>> {
        let mut all: Vec<_> = self
            .load_subject_quotas(scope.tenant(), scope.incarnation())
            .await?
            .into_iter()
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    pub async fn put_subject_quota(
        &self,
        scope: &TenantScope,
        subject: &str,
        limits: &Limits,
    ) -> Result<()> {
        let raw = json(limits)?;
        q(
            "INSERT INTO quota_limits (tenant_id, incarnation, subject, limits)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, incarnation, subject) DO UPDATE SET limits = excluded.limits",
        )
        .bind(scope.tenant().as_str())
        .bind(scope.incarnation().as_str())
        .bind(subject)
        .bind(raw)
        .exec(&self.platform)
        .await?;
        self.changed(scope.tenant());
        Ok(())
    }

    /// Whether there was one to delete.
    pub async fn delete_subject_quota(&self, scope: &TenantScope, subject: &str) -> Result<bool> {
        let n = q("DELETE FROM quota_limits
                   WHERE tenant_id = $1 AND incarnation = $2 AND subject = $3")
        .bind(scope.tenant().as_str())
        .bind(scope.incarnation().as_str())
        .bind(subject)
        .exec(&self.platform)
        .await?;
        self.changed(scope.tenant());
        Ok(n > 0)
    }

    /// A level's budget spend in `month` (0 when none is recorded).
    pub async fn quota_spent(&self, p: &Principal, subject: &str, month: &str) -> Result<u64> {
        let (Some(tenant), Some(incarnation)) = (p.tenant(), p.incarnation()) else {
            return Ok(0);
        };
        let row = q("SELECT spent FROM quota_spend
                     WHERE tenant_id = $1 AND incarnation = $2 AND subject = $3 AND month = $4")
        .bind(tenant.as_str())
        .bind(incarnation.as_str())
        .bind(subject)
        .bind(month)
        .opt(&self.platform)
        .await?;
        match row {
            Some(r) => Ok(r.get::<i64>("spent")?.max(0) as u64),
            None => Ok(0),
        }
    }

    /// Adds to a level's budget spend in `month`.
    pub async fn add_quota_spend(
        &self,
        p: &Principal,
        subject: &str,
        month: &str,
        amount: u64,
    ) -> Result<()> {
        let (Some(tenant), Some(incarnation)) = (p.tenant(), p.incarnation()) else {
            return Ok(());
        };
        q(
            "INSERT INTO quota_spend (tenant_id, incarnation, subject, month, spent)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, incarnation, subject, month)
           DO UPDATE SET spent = quota_spend.spent + excluded.spent",
        )
        .bind(tenant.as_str())
        .bind(incarnation.as_str())
        .bind(subject)
        .bind(month)
        .bind(amount.min(i64::MAX as u64) as i64)
        .exec(&self.platform)
        .await?;
        Ok(())
    }
}
