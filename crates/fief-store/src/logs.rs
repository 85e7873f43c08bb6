//! Private invocation logs. Records are tenant content: placed by tier in
//! `log_records` (see `placement.rs`), each sealed with the tenant's data
//! key bound to (tenant, stream, seq), so offboarding's key destruction
//! shreds them and a row moved to another tenant's place does not open.
//! Only the metadata a query filters on (time, request id, kind, model,
//! principal) is in clear. A tenant's settings and sink (its secret or
//! bucket credentials) are platform rows sealed the same way.

use fief_core::{Incarnation, TenantId};
use fief_crypto::SealContext;
use fief_logs::sink::Progress;
use fief_logs::{Entry, Record};

use crate::authn::now_ms;
use crate::db::{q, Db, Row};
use crate::placement::tenant_filter;
use crate::principal::Principal;
use crate::usage::placeholders;
use crate::{Result, Store, StoreError, TenantScope};

/// The right to append to one tenant incarnation's log and read its
/// settings: every authenticated principal of a tenant holds it for its
/// own tenant (its invocations are recorded whatever its policies say).
/// It reads no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    tenant: TenantId,
    incarnation: Incarnation,
}

impl LogAppend {
    pub fn of(p: &Principal) -> Option<LogAppend> {
        Some(LogAppend {
            tenant: p.tenant()?.clone(),
            incarnation: p.incarnation()?.clone(),
        })
    }
    pub fn of_scope(scope: &TenantScope) -> LogAppend {
        LogAppend {
            tenant: scope.tenant().clone(),
            incarnation: scope.incarnation().clone(),
        }
    }
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    fn scope(&self) -> TenantScope {
        TenantScope::internal(self.tenant.clone(), self.incarnation.clone())
    }
}

/// Which records a read returns.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Records after this sequence number.
    pub after: i64,
    /// [from, to) in ms since the epoch.
    pub from_ms: i64,
    pub to_ms: i64,
    pub model: Option<String>,
    pub principal: Option<String>,
    pub limit: i64,
}

/// A tenant's sealed settings and sink, opened (bytes the caller parses),
/// and where the sink stands.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    pub settings: Option<Vec<u8>>,
    pub sink: Option<Vec<u8>>,
    pub progress: Progress,
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<i64>,
}

/// A sink whose delivery this replica holds the lease for.
#[derive(Debug, Clone)]
pub struct SinkLease {
    pub who: LogAppend,
    pub sink: Vec<u8>,
    pub progress: Progress,
    pub failures: i64,
}

fn record_context(tenant: &TenantId, stream: &str, seq: i64) -> SealContext {
    SealContext::new(tenant, "log-record", &format!("{stream}\u{0}{seq}"))
}

fn config_context(tenant: &TenantId, what: &str) -> SealContext {
    SealContext::new(tenant, "log-config", what)
}

impl Store {
    /// Appends records to a stream, numbered after its last in one
    /// transaction (another replica's append that took the same numbers
    /// first makes this one try again with the next). Returns the first and
    /// last sequence numbers.
    pub async fn append_logs(
        &self,
        who: &LogAppend,
        stream: &str,
        entries: &[Entry],
    ) -> Result<(i64, i64)> {
        let scope = who.scope();
        let tenant = scope.tenant();
        let key = self.data_key(&scope).await?;
        let place = self.place(&scope).await?;
        let t = place.t("log_records");
        let mut tries = 0;
        loop {
            let attempt: Result<(i64, i64)> = async {
                let mut tx = place.begin_write(tenant).await?;
                // Replicas appending to one stream take turns (numbering
                // optimistically, three busy replicas kept colliding past
                // any number of retries); the retry below stays a backstop.
                if matches!(place.db, Db::Pg(_)) {
                    q("SELECT pg_advisory_xact_lock(4607736, hashtext($1 || '/' || $2))")
                        .bind(tenant.as_str())
                        .bind(stream)
                        .exec(&mut tx)
                        .await?;
                }
                let last: i64 = q(format!(
                    "SELECT COALESCE(MAX(seq), 0) AS n FROM {t} WHERE tenant_id = $1 AND stream = $2"
                ))
                .bind(tenant.as_str())
                .bind(stream)
                .one(&mut tx)
                .await?
                .get("n")?;
                // One statement per chunk of records.
                for (c, chunk) in entries.chunks(200).enumerate() {
                    let mut insert = q(format!(
                        "INSERT INTO {t} (tenant_id, stream, seq, at_ms, request_id, kind, model,
                         principal, sealed) VALUES {}",
                        placeholders(chunk.len(), 9)
                    ));
                    for (i, e) in chunk.iter().enumerate() {
                        let seq = last + 1 + (c * 200 + i) as i64;
                        let sealed = key.seal(&record_context(tenant, stream, seq), &e.body)?;
                        insert = insert
                            .bind(tenant.as_str())
                            .bind(stream)
                            .bind(seq)
                            .bind(e.at_ms)
                            .bind(e.request_id.as_str())
                            .bind(e.kind.as_str())
                            .bind(e.model.as_str())
                            .bind(e.principal.as_str())
                            .bind(sealed);
                    }
                    insert.exec(&mut tx).await?;
                }
                tx.commit().await?;
                Ok((last + 1, last + entries.len() as i64))
            }
            .await;
            match attempt {
                Err(StoreError::Db(e)) if tries < 5 && is_conflict(&e) => tries += 1,
                other => return other,
            }
        }
    }

    /// Reads records, oldest first. A row that does not open under the
    /// tenant's key (it is not this tenant's, whatever its column says) is
    /// counted and skipped.
    pub async fn read_logs(
        &self,
        scope: &TenantScope,
        stream: &str,
        f: &LogQuery,
    ) -> Result<Vec<Record>> {
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let place = self.place(scope).await?;
        let mut sql = format!(
            "SELECT seq, at_ms, request_id, kind, model, principal, sealed FROM {} \
             WHERE {} AND stream = $2 AND seq > $3 AND at_ms >= $4 AND at_ms < $5",
            place.t("log_records"),
            tenant_filter()
        );
        let mut n = 5;
        for (column, value) in [("model", &f.model), ("principal", &f.principal)] {
            if value.is_some() {
                n += 1;
                sql.push_str(&format!(" AND {column} = ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", f.limit.clamp(1, 10_000)));
        let mut stmt = q(sql)
            .bind(tenant.as_str())
            .bind(stream)
            .bind(f.after)
            .bind(f.from_ms)
            .bind(f.to_ms);
        for v in [&f.model, &f.principal].into_iter().flatten() {
            stmt = stmt.bind(v);
        }
        let rows = place.fetch(tenant, stmt).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.get("seq")?;
            let sealed: Vec<u8> = row.get("sealed")?;
            let Ok(body) = key.open(&record_context(tenant, stream, seq), &sealed) else {
                self.count_rejected(1);
                continue;
            };
            out.push(record(row, seq, &body)?);
        }
        Ok(out)
    }

    /// Deletes records older than `before_ms`; returns how many went.
    pub async fn delete_logs(
        &self,
        scope: &TenantScope,
        stream: &str,
        before_ms: i64,
    ) -> Result<u64> {
        let place = self.place(scope).await?;
        let tenant = scope.tenant();
        let n = place
            .run(
                tenant,
                q(format!(
                    "DELETE FROM {} WHERE tenant_id = $1 AND stream = $2 AND at_ms < $3",
                    place.t("log_records")
                ))
                .bind(tenant.as_str())
                .bind(stream)
                .bind(before_ms),
            )
            .await?;
        place.scrub().await?;
        Ok(n)
    }

    /// The last sequence number of a stream (0: none yet).
    pub async fn latest_log_seq(&self, who: &LogAppend, stream: &str) -> Result<i64> {
        let scope = who.scope();
        let place = self.place(&scope).await?;
        let rows = place
            .fetch(
                who.tenant(),
                q(format!(
                    "SELECT COALESCE(MAX(seq), 0) AS n FROM {} WHERE tenant_id = $1 AND stream = $2",
                    place.t("log_records")
                ))
                .bind(who.tenant().as_str())
                .bind(stream),
            )
            .await?;
        rows.first().map_or(Ok(0), |r| r.get("n"))
    }

    /// A tenant's settings and sink, opened.
    pub async fn log_config(&self, who: &LogAppend) -> Result<LogConfig> {
        let row = q(
            "SELECT incarnation, sealed_settings, sealed_sink, delivered, skipped,
                     failures, last_error, last_delivery_ms FROM log_config WHERE tenant_id = $1",
        )
        .bind(who.tenant().as_str())
        .opt(&self.platform)
        .await?;
        let Some(row) = row else {
            return Ok(LogConfig::default());
        };
        let incarnation: String = row.get("incarnation")?;
        if incarnation != who.incarnation.as_str() {
            // An earlier incarnation's row (offboarding deletes it; this is
            // belt and braces): nothing of it applies.
            return Ok(LogConfig::default());
        }
        let key = self.data_key(&who.scope()).await?;
        let open = |what: &str, column: &str| -> Result<Option<Vec<u8>>> {
            let sealed: Vec<u8> = row.get(column)?;
            if sealed.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                key.open(&config_context(who.tenant(), what), &sealed)?,
            ))
        };
        Ok(LogConfig {
            settings: open("settings", "sealed_settings")?,
            sink: open("sink", "sealed_sink")?,
            progress: Progress {
                delivered: row.get("delivered")?,
                skipped: row.get("skipped")?,
            },
            failures: row.get("failures")?,
            last_error: row.get("last_error")?,
            last_delivery_ms: row.get("last_delivery_ms")?,
        })
    }

    /// Sets (or, with `None`, clears) a tenant's settings.
    pub async fn put_log_settings(
        &self,
        scope: &TenantScope,
        settings: Option<&[u8]>,
    ) -> Result<()> {
        self.put_log_config(scope, "settings", settings).await
    }

    /// Sets (or clears) a tenant's sink. A new sink starts after the
    /// stream's last record: history stays readable through the API.
    pub async fn put_log_sink(
        &self,
        scope: &TenantScope,
        stream: &str,
        sink: Option<&[u8]>,
    ) -> Result<()> {
        self.put_log_config(scope, "sink", sink).await?;
        let latest = self
            .latest_log_seq(&LogAppend::of_scope(scope), stream)
            .await?;
        q(
            "UPDATE log_config SET delivered = $1, skipped = 0, failures = 0, last_error = NULL,
           next_ms = 0, lease_holder = NULL, lease_until = 0 WHERE tenant_id = $2",
        )
        .bind(latest)
        .bind(scope.tenant().as_str())
        .exec(&self.platform)
        .await?;
        Ok(())
    }

    async fn put_log_config(
        &self,
        scope: &TenantScope,
        what: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        self.check_live(scope).await?;
        let tenant = scope.tenant();
        let sealed = match value {
            Some(v) => self
                .data_key(scope)
                .await?
                .seal(&config_context(tenant, what), v)?,
            None => Vec::new(),
        };
        let column = if what == "sink" {
            "sealed_sink"
        } else {
            "sealed_settings"
        };
        let mut tx = self.platform.begin_write().await?;
        // A row of an earlier incarnation is replaced, never reused.
        q("DELETE FROM log_config WHERE tenant_id = $1 AND incarnation <> $2")
            .bind(tenant.as_str())
            .bind(scope.incarnation().as_str())
            .exec(&mut tx)
            .await?;
        q("INSERT INTO log_config (tenant_id, incarnation, sealed_settings, sealed_sink, delivered,
           skipped, failures, next_ms, lease_until) VALUES ($1, $2, $3, $3, 0, 0, 0, 0, 0)
           ON CONFLICT (tenant_id) DO NOTHING")
        .bind(tenant.as_str())
        .bind(scope.incarnation().as_str())
        .bind(Vec::new())
        .exec(&mut tx)
        .await?;
        q(format!(
            "UPDATE log_config SET {column} = $1 WHERE tenant_id = $2"
        ))
        .bind(sealed)
        .bind(tenant.as_str())
        .exec(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the sinks due for delivery: set, not leased by another
    /// replica, and past their backoff. The lease keeps one replica
    /// delivering a tenant's records at a time, so they arrive in order.
    pub async fn lease_sinks(&self, holder: &str, lease_ms: i64) -> Result<Vec<SinkLease>> {
        let now = now_ms();
        // Read first: the common case (no sink due) takes no write lock.
        let due = q("SELECT COUNT(*) AS n FROM log_config WHERE length(sealed_sink) > 0
                     AND next_ms <= $2 AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until < $2)")
        .bind(holder)
        .bind(now)
        .one(&self.platform)
        .await?;
        if due.get::<i64>("n")? == 0 {
            return Ok(Vec::new());
        }
        q("UPDATE log_config SET lease_holder = $1, lease_until = $2
           WHERE length(sealed_sink) > 0 AND next_ms <= $3
             AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until < $3)")
        .bind(holder)
        .bind(now + lease_ms)
        .bind(now)
        .exec(&self.platform)
        .await?;
        let rows = q(
            "SELECT tenant_id, incarnation, sealed_sink, delivered, skipped, failures
                      FROM log_config WHERE lease_holder = $1 AND lease_until > $2
                      AND length(sealed_sink) > 0 AND next_ms <= $2",
        )
        .bind(holder)
        .bind(now)
        .all(&self.platform)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let tenant: String = row.get("tenant_id")?;
            let incarnation: String = row.get("incarnation")?;
            let (Ok(tenant), Ok(incarnation)) =
                (TenantId::parse(&tenant), Incarnation::parse(&incarnation))
            else {
                continue;
            };
            let who = LogAppend {
                tenant,
                incarnation,
            };
            let sealed: Vec<u8> = row.get("sealed_sink")?;
            // A tenant being offboarded has no key: its sink is skipped.
            let Ok(key) = self.data_key(&who.scope()).await else {
                continue;
            };
            let Ok(sink) = key.open(&config_context(who.tenant(), "sink"), &sealed) else {
                self.count_rejected(1);
                continue;
            };
            out.push(SinkLease {
                who,
                sink,
                progress: Progress {
                    delivered: row.get("delivered")?,
                    skipped: row.get("skipped")?,
                },
                failures: row.get("failures")?,
            });
        }
        Ok(out)
    }

    /// The records a leased sink is to deliver next.
    pub async fn sink_records(
        &self,
        lease: &SinkLease,
        stream: &str,
        limit: i64,
    ) -> Result<Vec<Record>> {
        let f = LogQuery {
            after: lease.progress.delivered,
            from_ms: 0,
            to_ms: i64::MAX,
            limit,
            ..LogQuery::default()
        };
        self.read_logs(&lease.who.scope(), stream, &f).await
    }

    /// Records a delivery's outcome, if this replica still holds the lease.
    pub async fn sink_progress(
        &self,
        lease: &SinkLease,
        holder: &str,
        progress: Progress,
        error: Option<&str>,
        next_ms: i64,
    ) -> Result<()> {
        let (failures, delivered_at) = match error {
            Some(_) => (lease.failures + 1, None),
            None => (0, Some(now_ms())),
        };
        q(
            "UPDATE log_config SET delivered = $1, skipped = $2, failures = $3, last_error = $4,
           last_delivery_ms = COALESCE($5, last_delivery_ms), next_ms = $6
           WHERE tenant_id = $7 AND incarnation = $8 AND lease_holder = $9",
        )
        .bind(progress.delivered)
        .bind(progress.skipped)
        .bind(failures)
        .bind(error)
        .bind(delivered_at)
        .bind(next_ms)
        .bind(lease.who.tenant().as_str())
        .bind(lease.who.incarnation.as_str())
        .bind(holder)
        .exec(&self.platform)
        .await?;
        Ok(())
    }

    /// Every active tenant's log append right, for retention.
    pub async fn log_tenants(&self) -> Result<Vec<LogAppend>> {
        Ok(self
            .active_incarnations()
            .await?
            .into_iter()
            .map(|(tenant, incarnation)| LogAppend {
                tenant,
                incarnation,
            })
            .collect())
    }

    /// Retention: deletes a tenant's records older than `before_ms`.
    pub async fn expire_logs(&self, who: &LogAppend, stream: &str, before_ms: i64) -> Result<u64> {
        self.delete_logs(&who.scope(), stream, before_ms).await
    }
}

fn record(row: &Row, seq: i64, body: &[u8]) -> Result<Record> {
    let at_ms: i64 = row.get("at_ms")?;
    let body = serde_json::from_slice(body)
        .map_err(|e| StoreError::Corrupt(format!("log record: {e}")))?;
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    Ok(Record {
        seq,
        at: humantime::format_rfc3339_millis(at).to_string(),
        request_id: row.get("request_id")?,
        kind: row.get("kind")?,
        model: row.get("model")?,
        principal: row.get("principal")?,
        body,
    })
}

/// Another writer took the same sequence numbers first.
fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
