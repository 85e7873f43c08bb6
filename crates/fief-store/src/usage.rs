//! Usage events and their hourly sums: platform metadata (counts and
//! names, never content), readable by the operator. An event and the sum
//! it adds to are written in one transaction, and a repeated request id is
//! ignored, so nothing is counted twice.

use std::collections::BTreeMap;

use fief_core::{Incarnation, Tags, TenantId};
use fief_metering::{Aggregate, Kind, Quantities, UsageEvent};

use crate::db::{q, Row};
use crate::principal::Principal;
use crate::{Result, Store, StoreError, TenantScope};

const QUANTITY_COLUMNS: &str = "requests, prompt_tokens, completion_tokens, embedding_tokens, \
     compute_us, bytes_in, bytes_out, units, byte_days, duration_us";

/// `($1, …, $cols), ($cols+1, …)`: `rows` tuples of `cols` parameters.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn quantities(row: &Row) -> Result<Quantities> {
    let mut v = [0u64; 10];
    for (slot, name) in v.iter_mut().zip(Quantities::FIELDS) {
        let n: i64 = row.get(name)?;
        *slot = u64::try_from(n).unwrap_or(0);
    }
    Ok(Quantities::from_values(v))
}

fn kind_and_tags(row: &Row) -> Result<(Kind, Tags)> {
    let kind: String = row.get("kind")?;
    let tags: String = row.get("tags")?;
    Ok((
        Kind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("usage kind {kind:?}")))?,
        serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("usage tags: {e}")))?,
    ))
}

/// An hourly sum's key: tenant, incarnation, hour, kind, model, principal, tags.
type HourKey = (String, String, i64, &'static str, String, String, String);

/// Which aggregates a view reads.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub tenant: Option<String>,
    /// Hours since the epoch, [from, to).
    pub from_hour: i64,
    pub to_hour: i64,
}

impl Store {
    /// The principal's tenant's tags now (from the directory).
    pub async fn tenant_tags(&self, principal: &Principal) -> Result<Tags> {
        let Some(tenant) = principal.tenant() else {
            return Ok(Tags::new());
        };
        Ok(self
            .tenant_state(tenant)
            .await?
            .map(|s| (*s.tags).clone())
            .unwrap_or_default())
    }

    /// Writes a batch of events in one transaction; returns how many were
    /// new (a request id already recorded for its tenant is skipped). The
    /// new events' hourly sums are added in key order, so replicas writing
    /// at once wait for each other instead of deadlocking.
    pub async fn record_usage(&self, events: &[UsageEvent]) -> Result<usize> {
        // Few statements per batch: one multi-row insert per chunk of
        // events, one multi-row upsert per chunk of sums (each statement is
        // a round trip, and on SQLite the write lock is held meanwhile).
        const CHUNK: usize = 200;
        let mut tx = self.platform.begin_write().await?;
        let mut tags_of = Vec::with_capacity(events.len());
        for e in events {
            tags_of.push(
                serde_json::to_string(&e.tags).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        let mut inserted = std::collections::HashSet::new();
        for (chunk, tags) in events.chunks(CHUNK).zip(tags_of.chunks(CHUNK)) {
            let mut insert = q(format!(
                "INSERT INTO usage_events (tenant_id, request_id, incarnation, principal, source,
                 tags, at_ms, kind, model, {QUANTITY_COLUMNS}) VALUES {}
                 ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING tenant_id, request_id",
                placeholders(chunk.len(), 9 + Quantities::FIELDS.len())
            ));
            for (e, tags) in chunk.iter().zip(tags) {
                insert = insert
                    .bind(e.tenant.as_str())
                    .bind(e.request_id.as_str())
                    .bind(e.incarnation.as_str())
                    .bind(e.principal.as_str())
                    .bind(e.source.clone())
                    .bind(tags.as_str())
                    .bind(e.at_ms)
                    .bind(e.kind.name())
                    .bind(e.model.as_str());
                for v in e.quantities.values() {
                    insert = insert.bind(int(v));
                }
            }
            for row in insert.all(&mut tx).await? {
                let tenant: String = row.get("tenant_id")?;
                let request: String = row.get("request_id")?;
                inserted.insert((tenant, request));
            }
        }
        let mut sums: BTreeMap<HourKey, Quantities> = BTreeMap::new();
        for (e, tags) in events.iter().zip(tags_of) {
            // A request id twice in one batch is new once.
            if !inserted.remove(&(e.tenant.clone(), e.request_id.clone())) {
                continue;
            }
            sums.entry((
                e.tenant.clone(),
                e.incarnation.clone(),
                e.hour(),
                e.kind.name(),
                e.model.clone(),
                e.principal.clone(),
                tags,
            ))
            .or_default()
            .add(&e.quantities);
        }
        let new = sums.values().map(|q| q.requests as usize).sum();
        let sums: Vec<_> = sums.into_iter().collect();
        for chunk in sums.chunks(CHUNK) {
            let mut add = q(format!(
                "INSERT INTO usage_hourly (tenant_id, incarnation, hour, kind, model, principal,
                 tags, {QUANTITY_COLUMNS}) VALUES {}
                 ON CONFLICT (tenant_id, incarnation, hour, kind, model, principal, tags)
                 DO UPDATE SET {}",
                placeholders(chunk.len(), 7 + Quantities::FIELDS.len()),
                Quantities::FIELDS
                    .iter()
                    .map(|c| format!("{c} = usage_hourly.{c} + excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for ((tenant, incarnation, hour, kind, model, principal, tags), quantities) in chunk {
                add = add
                    .bind(tenant.as_str())
                    .bind(incarnation.as_str())
                    .bind(*hour)
                    .bind(*kind)
                    .bind(model.as_str())
                    .bind(principal.as_str())
                    .bind(tags.as_str());
                for v in quantities.values() {
                    add = add.bind(int(v));
                }
            }
            add.exec(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Hourly aggregates in a range, of one tenant or all.
    pub async fn usage_aggregates(&self, filter: &UsageFilter) -> Result<Vec<Aggregate>> {
        let rows = q(format!(
            "SELECT tenant_id, incarnation, hour, kind, model, principal, tags, {QUANTITY_COLUMNS}
             FROM usage_hourly WHERE hour >= $1 AND hour < $2
             AND ($3 IS NULL OR tenant_id = $3)
             ORDER BY tenant_id, hour, kind, model, principal"
        ))
        .bind(filter.from_hour)
        .bind(filter.to_hour)
        .bind(filter.tenant.clone())
        .all(&self.platform)
        .await?;
        rows.iter()
            .map(|row| {
                let (kind, tags) = kind_and_tags(row)?;
                Ok(Aggregate {
                    tenant: row.get("tenant_id")?,
                    incarnation: row.get("incarnation")?,
                    hour: row.get("hour")?,
                    minute: None,
                    kind,
                    model: row.get("model")?,
                    principal: row.get("principal")?,
                    tags,
                    quantities: quantities(row)?,
                })
            })
            .collect()
    }

    /// The raw events in [from_ms, to_ms), of one tenant or all, each as a
    /// row with its minute (for minute views of short ranges).
    pub async fn usage_minutes(
        &self,
        tenant: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Aggregate>> {
        let rows = q(format!(
            "SELECT tenant_id, incarnation, principal, tags, at_ms, kind, model, {QUANTITY_COLUMNS}
             FROM usage_events WHERE at_ms >= $1 AND at_ms < $2
             AND ($3 IS NULL OR tenant_id = $3)
             ORDER BY at_ms"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(tenant.map(str::to_owned))
        .all(&self.platform)
        .await?;
        rows.iter()
            .map(|row| {
                let (kind, tags) = kind_and_tags(row)?;
                let at_ms: i64 = row.get("at_ms")?;
                Ok(Aggregate {
                    tenant: row.get("tenant_id")?,
                    incarnation: row.get("incarnation")?,
                    hour: at_ms.div_euclid(3_600_000),
                    minute: Some(at_ms.div_euclid(60_000)),
                    kind,
                    model: row.get("model")?,
                    principal: row.get("principal")?,
                    tags,
                    quantities: quantities(row)?,
                })
            })
            .collect()
    }

    /// The raw events of one tenant (newest last), for audits of the
    /// metering itself.
    pub async fn usage_events(&self, tenant: &str, limit: i64) -> Result<Vec<UsageEvent>> {
        let rows = q(format!(
            "SELECT request_id, incarnation, principal, source, tags, at_ms, kind, model,
             {QUANTITY_COLUMNS} FROM usage_events WHERE tenant_id = $1 ORDER BY at_ms LIMIT $2"
        ))
        .bind(tenant)
        .bind(limit)
        .all(&self.platform)
        .await?;
        rows.iter()
            .map(|row| {
                let (kind, tags) = kind_and_tags(row)?;
                Ok(UsageEvent {
                    request_id: row.get("request_id")?,
                    tenant: tenant.to_owned(),
                    incarnation: row.get("incarnation")?,
                    principal: row.get("principal")?,
                    source: row.get("source")?,
                    tags,
                    at_ms: row.get("at_ms")?,
                    kind,
                    model: row.get("model")?,
                    quantities: quantities(row)?,
                })
            })
            .collect()
    }

    /// Deletes raw events older than `before_ms` (aggregates stay).
    pub async fn expire_usage_events(&self, before_ms: i64) -> Result<u64> {
        q("DELETE FROM usage_events WHERE at_ms < $1")
            .bind(before_ms)
            .exec(&self.platform)
            .await
    }
}

/// What one tenant holds, by kind of content, in bytes: the daily storage
/// sample's quantities.
#[derive(Debug, Clone)]
pub struct StorageHeld {
    pub tenant: TenantId,
    pub incarnation: Incarnation,
    pub tags: Tags,
    /// (what, bytes): `models`, `knowledge`, `items`, `logs`.
    pub bytes: Vec<(&'static str, u64)>,
}

impl Store {
    /// Every active tenant's bytes held: model bytes, knowledge-base
    /// documents, table items and private log records (sealed sizes for
    /// the last two). Sizes only; nothing is opened.
    pub async fn storage_held(&self) -> Result<Vec<StorageHeld>> {
        let mut out = Vec::new();
        for (tenant, incarnation) in self.active_incarnations().await? {
            let Some(state) = self.tenant_state(&tenant).await? else {
                continue;
            };
            let scope = TenantScope::internal(tenant.clone(), incarnation.clone());
            // A tenant offboarded or moved meanwhile is sampled tomorrow.
            let Ok(place) = self.place(&scope).await else {
                continue;
            };
            let mut bytes = Vec::new();
            for (what, table, size) in [
                ("models", "models", "size_bytes"),
                ("knowledge", "kb_documents", "bytes"),
                ("items", "items", "length(sealed)"),
                ("logs", "log_records", "length(sealed)"),
            ] {
                let rows = place
                    .fetch(
                        &tenant,
                        q(format!(
                            "SELECT CAST(COALESCE(SUM({size}), 0) AS BIGINT) AS n FROM {} WHERE tenant_id = $1",
                            place.t(table)
                        ))
                        .bind(tenant.as_str()),
                    )
                    .await?;
                let n: i64 = rows.first().map_or(Ok(0), |r| r.get("n"))?;
                bytes.push((what, u64::try_from(n).unwrap_or(0)));
            }
            out.push(StorageHeld {
                tenant,
                incarnation,
                tags: (*state.tags).clone(),
                bytes,
            });
        }
        Ok(out)
    }
}
