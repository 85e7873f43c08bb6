//! The change log replicas read to keep their caches coherent (PostgreSQL
//! only: an embedded store has one process). Rows are written by triggers
//! in the changing transaction (`migrations-postgres/0007_changes.sql`),
//! or, for a silo tenant's own database, by [`Store::announce`] after the
//! commit there; every append notifies the channel [`CHANNEL`].

use fief_core::TenantId;

use crate::db::{q, Db};
use crate::{Placement, Result, Store};

/// The PostgreSQL notification channel of the change log.
pub const CHANNEL: &str = "fief_changes";

/// One announced change: the table it happened in, the tenant, the thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub seq: i64,
    pub kind: String,
    pub tenant: Option<TenantId>,
    pub subject: Option<String>,
    /// Made by this process, which forgot what it changed when it changed
    /// it: the follower skips it (re-applying would only drop warm state).
    pub own: bool,
}

impl Store {
    /// The newest change's number; `None` without PostgreSQL (no other
    /// replica exists to learn of changes from).
    pub async fn latest_change(&self) -> Result<Option<i64>> {
        let Db::Pg(_) = &self.platform else {
            return Ok(None);
        };
        let row = q("SELECT COALESCE(MAX(seq), 0) AS seq FROM changes")
            .one(&self.platform)
            .await?;
        Ok(Some(row.get("seq")?))
    }

    /// The oldest change still kept (older ones are pruned): a replica
    /// behind it has missed some and must forget everything.
    pub async fn oldest_change(&self) -> Result<Option<i64>> {
        let Db::Pg(_) = &self.platform else {
            return Ok(None);
        };
        let row = q("SELECT MIN(seq) AS seq FROM changes")
            .one(&self.platform)
            .await?;
        row.get("seq")
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<ChangeRow>> {
        let Db::Pg(_) = &self.platform else {
            return Ok(Vec::new());
        };
        let origin = match &self.placement {
            Placement::Pg(p) => Some(p.origin.as_str()),
            Placement::Sqlite(_) => None,
        };
        let rows = q(
            "SELECT seq, kind, tenant, subject, origin FROM changes WHERE seq > $1 ORDER BY seq \
                      LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .all(&self.platform)
        .await?;
        rows.iter()
            .map(|r| {
                let tenant: Option<String> = r.get("tenant")?;
                Ok(ChangeRow {
                    seq: r.get("seq")?,
                    kind: r.get("kind")?,
                    // A tenant id that does not parse names nothing cached.
                    tenant: tenant.and_then(|t| TenantId::parse(&t).ok()),
                    subject: r.get("subject")?,
                    own: origin.is_some()
                        && r.get::<Option<String>>("origin")?.as_deref() == origin,
                })
            })
            .collect()
    }

    /// A listener on [`CHANNEL`] over the runtime role's own connection.
    pub async fn change_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        let Db::Pg(pool) = &self.platform else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(listener))
    }

    /// Announces a change committed in a silo tenant's own database (which
    /// cannot reach the change log in its transaction). Pool and bridge
    /// places and platform tables announce by trigger; this is a no-op for
    /// them and on SQLite.
    pub(crate) async fn announce(
        &self,
        tenant: &TenantId,
        kind: &str,
        subject: &str,
    ) -> Result<()> {
        let Db::Pg(_) = &self.platform else {
            return Ok(());
        };
        if self.tenant_state(tenant).await?.map(|s| s.tier) != Some(fief_core::Tier::Silo) {
            return Ok(());
        }
        q("SELECT fief_platform.announce_change($1, $2, $3)")
            .bind(kind)
            .bind(tenant.as_str())
            .bind(subject)
            .exec(&self.platform)
            .await?;
        Ok(())
    }

    /// [`announce`](Self::announce) after a change that already committed:
    /// a failure is logged, not returned (the change stands; other
    /// replicas learn of it at the latest with the periodic sweep).
    pub(crate) async fn announced(&self, tenant: &TenantId, kind: &str, subject: &str) {
        if let Err(e) = self.announce(tenant, kind, subject).await {
            tracing::error!(tenant = %tenant, kind, "a silo change could not be announced: {e}");
        }
    }

    /// Drops changes older than a day (a replica that far behind forgets
    /// everything instead), keeping the newest.
    pub async fn prune_changes(&self) -> Result<u64> {
        let Placement::Pg(pg) = &self.placement else {
            return Ok(0);
        };
        let done = sqlx::query(
            "DELETE FROM fief_platform.changes WHERE at < now() - interval '1 day' \
             AND seq < (SELECT MAX(seq) FROM fief_platform.changes)",
        )
        .execute(&pg.admin)
        .await?;
        Ok(done.rows_affected())
    }

    /// Reads the session signing keys again (another replica rotated or
    /// retired one).
    pub async fn reload_signing_keys(&self) -> Result<()> {
        let stored = self.signing_keys().await?;
        for kid in self.sessions.kids() {
            if !stored.iter().any(|(k, _, _)| k == &kid) {
                self.sessions.remove_key(&kid);
            }
        }
        for (kid, pkcs8, created_at) in stored {
            let created = humantime::parse_rfc3339(&created_at).map_err(|e| {
                crate::StoreError::Corrupt(format!("signing key {kid} timestamp: {e}"))
            })?;
            self.sessions
                .add_key(&kid, &pkcs8, created)
                .map_err(|e| crate::StoreError::Config(e.to_string()))?;
        }
        Ok(())
    }
}
