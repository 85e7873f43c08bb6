//! Coherent caches across replicas on one PostgreSQL. Every change some
//! replica caches is a row of the store's change log, written in the
//! changing transaction and notified on `fief_changes`. Each replica
//! applies the rows after the last one it applied: when a notification
//! arrives, after its listener reconnects (notifications may have been
//! missed) and every `postgres.change_poll_ms` whatever it heard, so a
//! missed notification leaves a cache stale for at most that long.
//! Applying a change only forgets: the next request reads the row again.
//! A replica skips the changes its own connections made: the write path
//! that made them already forgot locally, as on a single node.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fief_store::{Change, ChangeRow};
use tokio::sync::watch;

use crate::state::AppState;

/// How many change rows one read applies (a replica far behind reads on).
const PAGE: i64 = 1000;

/// The change log position this replica has applied.
#[derive(Default)]
pub struct Coherence {
    applied: AtomicI64,
}

impl Coherence {
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::SeqCst)
    }
}

/// What one change row makes this replica forget.
fn forget(state: &AppState, row: &ChangeRow) {
    // Only signing keys name no tenant (reloaded by the caller).
    let Some(tenant) = &row.tenant else {
        return;
    };
    match row.kind.as_str() {
        "api_keys" => match &row.subject {
            Some(key) => state.store.invalidate(&Change::Key(key.clone())),
            None => state.store.invalidate(&Change::Tenant(tenant.clone())),
        },
        "models" => {
            let name = row
                .subject
                .as_deref()
                .and_then(|n| fief_core::ModelName::parse(n).ok());
            match name {
                Some(name) => {
                    state
                        .store
                        .invalidate(&Change::Model(tenant.clone(), name.clone()));
                    state.cache.remove_model_of(tenant, &name);
                }
                None => {
                    state.store.invalidate(&Change::Tenant(tenant.clone()));
                    state.cache.remove_tenant(tenant);
                }
            }
        }
        "policies" | "roles" => state.policy.invalidate(tenant),
        "knowledge_bases" | "kb_documents" => {
            if let Err(e) = state.knowledge.forget_tenant(tenant) {
                tracing::error!(tenant = %tenant, "knowledge index could not be dropped: {e}");
            }
        }
        "log_config" => state.logs.forget(tenant),
        "quota_limits" => state.store.invalidate(&Change::Tenant(tenant.clone())),
        // The tenant row: its state, tier, tags, quotas, models allowed,
        // and everything cached under it.
        _ => forget_tenant(state, tenant),
    }
}

fn forget_tenant(state: &AppState, tenant: &fief_core::TenantId) {
    state.store.invalidate(&Change::Tenant(tenant.clone()));
    state.policy.invalidate(tenant);
    state.cache.remove_tenant(tenant);
    state.logs.forget(tenant);
    if let Err(e) = state.knowledge.forget_tenant(tenant) {
        tracing::error!(tenant = %tenant, "knowledge index could not be dropped: {e}");
    }
}

/// A replica too far behind the log (pruned past it) forgets everything.
async fn forget_everything(state: &AppState) -> Result<(), fief_store::StoreError> {
    state.store.invalidate(&Change::All);
    for t in state.store.list_tenants().await? {
        forget_tenant(state, &t.id);
    }
    Ok(())
}

/// After the tenant rows changed: worker pools follow the tier the store
/// now holds (a tier change or an offboarding made elsewhere).
async fn follow_tier(state: &AppState, tenant: &fief_core::TenantId) {
    match state.store.get_tenant(tenant).await {
        Ok(Some(t)) if t.status == fief_store::TenantStatus::Active => {
            if let Err(e) = state.placement.apply(tenant, t.tier) {
                tracing::error!(tenant = %tenant, "worker pool for the new tier: {e}");
            }
        }
        Ok(_) => state.placement.remove(tenant),
        Err(e) => tracing::warn!(tenant = %tenant, "tenant after a change: {e}"),
    }
}

/// Applies every change after the last applied one. Errors leave the
/// position where it was (the next read tries again).
async fn catch_up(state: &AppState) -> Result<(), fief_store::StoreError> {
    loop {
        let from = state.coherence.applied();
        let rows = state.store.changes_since(from, PAGE).await?;
        let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
        else {
            return Ok(());
        };
        // A gap is a rolled-back change, or rows pruned past us: only the
        // second is asked about, and then everything is forgotten.
        if first > from + 1 && from > 0 {
            if let Some(oldest) = state.store.oldest_change().await? {
                if from + 1 < oldest {
                    forget_everything(state).await?;
                }
            }
        }
        let mut tiers = Vec::new();
        for row in rows.iter().filter(|r| !r.own) {
            forget(state, row);
            if row.kind == "signing_keys" {
                state.store.reload_signing_keys().await?;
            }
            if row.kind == "tenants" {
                if let Some(t) = &row.tenant {
                    if !tiers.contains(t) {
                        tiers.push(t.clone());
                    }
                }
            }
        }
        for t in &tiers {
            follow_tier(state, t).await;
        }
        state.coherence.applied.store(last, Ordering::SeqCst);
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

/// Starts following the change log (PostgreSQL only). The position starts
/// at the newest change: this process's caches are empty.
pub async fn spawn(
    state: &Arc<AppState>,
    stop: watch::Receiver<bool>,
) -> Result<(), fief_store::StoreError> {
    let Some(pg) = state.config.postgres.clone() else {
        return Ok(());
    };
    let Some(latest) = state.store.latest_change().await? else {
        return Ok(());
    };
    state.coherence.applied.store(latest, Ordering::SeqCst);
    tokio::spawn(follow(state.clone(), pg, stop));
    Ok(())
}

async fn follow(
    state: Arc<AppState>,
    pg: fief_config::PostgresConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(pg.change_poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener = None;
    loop {
        if pg.notifications && listener.is_none() {
            match state.store.change_listener().await {
                Ok(l) => {
                    listener = l;
                    // Whatever happened while no one listened.
                    if let Err(e) = catch_up(&state).await {
                        tracing::warn!("reading the change log: {e}");
                    }
                }
                Err(e) => tracing::warn!("listening for changes: {e}"),
            }
        }
        let heard = async {
            match listener.as_mut() {
                Some(l) => Some(l.try_recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = heard => match got {
                // A notification, or `None`: the connection was lost and
                // made again, so some may have been missed.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("change notifications lost: {e}");
                    listener = None;
                    tokio::time::sleep(Duration::from_millis(pg.change_poll_ms)).await;
                }
                None => {}
            },
            _ = tick.tick() => {}
            () = crate::stopped(&mut stop) => return,
        }
        if let Err(e) = catch_up(&state).await {
            tracing::warn!("reading the change log: {e}");
        }
    }
}

/// Prometheus text: the change log position applied.
pub fn render(state: &AppState, out: &mut String) {
    if state.config.postgres.is_some() {
        out.push_str(
            "# HELP fief_changes_applied The newest change-log entry this replica has applied.\n\
             # TYPE fief_changes_applied gauge\n",
        );
        out.push_str(&format!(
            "fief_changes_applied {}\n",
            state.coherence.applied()
        ));
    }
}
