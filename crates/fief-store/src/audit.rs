//! The audit chain on PostgreSQL, shared by every replica (the embedded
//! store's deployments keep the file log of `fief-audit`). Entries are the
//! file log's, byte for byte; appends take one advisory lock, so each
//! batch links to the committed head whichever replica wrote it.

use fief_audit::{Anchor, Entry, Event, Follower, Query, Verified, GENESIS};
use object_store::{path::Path as ObjectPath, ObjectStore, PutMode, PutOptions, PutPayload};

use crate::db::{q, Db};
use crate::usage::placeholders;
use crate::{Result, Store, StoreError};

/// Serialises appends across replicas (any constant fief owns).
const APPEND_LOCK: i64 = 4_607_736_914_032_211_971;
/// Where anchors go in the object store (`{seq:020}.json`, never replaced).
const ANCHORS: &str = "audit/anchors";
/// Rows a verification reads at a time.
const PAGE: i64 = 5000;

fn kind_name(e: &Event) -> Result<String> {
    serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| StoreError::Corrupt("audit kind".into()))
}

fn decision_name(d: fief_audit::Decision) -> &'static str {
    match d {
        fief_audit::Decision::Allow => "allow",
        fief_audit::Decision::Deny => "deny",
    }
}

fn ms(ts: &str) -> i64 {
    humantime::parse_rfc3339_weak(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Whether audit entries go to the database (PostgreSQL only).
    pub fn audits_in_database(&self) -> bool {
        matches!(self.platform, Db::Pg(_))
    }

    /// Appends `events` in order, in one transaction; returns their entries
    /// once committed. Nothing is returned for a batch that did not commit.
    pub async fn append_audit(&self, events: Vec<Event>) -> Result<Vec<Entry>> {
        const CHUNK: usize = 500;
        let mut tx = self.platform.begin_write().await?;
        q(format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
            .exec(&mut tx)
            .await?;
        let head = q("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .opt(&mut tx)
            .await?;
        let (seq, hash) = match head {
            Some(r) => (r.get::<i64>("seq")? as u64, r.get::<String>("hash")?),
            None => (0, GENESIS.to_owned()),
        };
        let sealed = fief_audit::chain(seq, &hash, &fief_audit::now_rfc3339(), events)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ts_ms = sealed.first().map_or(0, |s| ms(&s.entry.ts));
        for chunk in sealed.chunks(CHUNK) {
            let mut insert = q(format!(
                "INSERT INTO audit_log (seq, ts_ms, kind, tenant, decision, body, hash) VALUES {}",
                placeholders(chunk.len(), 7)
            ));
            for s in chunk {
                insert = insert
                    .bind(s.entry.seq as i64)
                    .bind(ts_ms)
                    .bind(kind_name(&s.entry.event)?)
                    .bind(s.entry.event.tenant.clone())
                    .bind(decision_name(s.entry.event.decision))
                    .bind(s.body.as_str())
                    .bind(s.hash.as_str());
            }
            insert.exec(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(sealed.into_iter().map(|s| s.entry).collect())
    }

    /// Entries matching `query`, newest last, through the indexes.
    pub async fn audit_entries(&self, query: &Query) -> Result<Vec<Entry>> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<crate::db::Arg> = Vec::new();
        let mut cond = |c: &str, a: crate::db::Arg| {
            args.push(a);
            conds.push(format!("{c} ${}", args.len()));
        };
        if let Some(t) = &query.tenant {
            cond("tenant =", t.as_str().into());
        }
        if let Some(d) = query.decision {
            cond("decision =", decision_name(d).into());
        }
        if let Some(k) = query.kind {
            let name = serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            cond("kind =", name.into());
        }
        if let Some(s) = query.since_ms {
            cond("ts_ms >=", s.into());
        }
        if let Some(u) = query.until_ms {
            cond("ts_ms <", u.into());
        }
        args.push(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT body FROM (SELECT seq, body FROM audit_log {filter} ORDER BY seq DESC \
             LIMIT ${}) newest ORDER BY seq",
            args.len()
        );
        let mut query = q(sql);
        for a in args {
            query = query.bind_arg(a);
        }
        query
            .all(&self.platform)
            .await?
            .iter()
            .map(|r| {
                let body: String = r.get("body")?;
                serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))
            })
            .collect()
    }

    /// Walks the whole chain in order; then checks it against the newest
    /// anchor, so a removed tail is reported too.
    pub async fn verify_audit(
        &self,
    ) -> std::result::Result<(Verified, Option<Anchor>), fief_audit::AuditError> {
        let store = |e: StoreError| fief_audit::AuditError::Store(e.to_string());
        let mut follower = Follower::new("audit_log", 1, GENESIS);
        let mut from = 0i64;
        loop {
            let rows =
                q("SELECT seq, body, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(from)
                    .bind(PAGE)
                    .all(&self.platform)
                    .await
                    .map_err(store)?;
            for r in &rows {
                let seq: i64 = r.get("seq").map_err(store)?;
                let body: String = r.get("body").map_err(store)?;
                let hash: String = r.get("hash").map_err(store)?;
                follower.next(seq as u64, &body, &hash)?;
                from = seq;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        let verified = follower.verified();
        let anchor = self.latest_anchor().await.map_err(store)?;
        if let Some(a) = &anchor {
            let at = q("SELECT hash FROM audit_log WHERE seq = $1")
                .bind(a.seq as i64)
                .opt(&self.platform)
                .await
                .map_err(store)?
                .map(|r| r.get::<String>("hash"))
                .transpose()
                .map_err(store)?;
            fief_audit::check_anchor(&verified, a, at.as_deref())?;
        }
        Ok((verified, anchor))
    }

    /// Checkpoints the head to the object store, never overwriting an
    /// anchor (a conditional create: the writer of the log cannot replace
    /// what an earlier anchor says). `None` for an empty log.
    pub async fn anchor_audit(&self) -> Result<Option<Anchor>> {
        let Some(head) = q("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .opt(&self.platform)
            .await?
        else {
            return Ok(None);
        };
        let anchor = Anchor {
            seq: head.get::<i64>("seq")? as u64,
            hash: head.get("hash")?,
            at: fief_audit::now_rfc3339(),
        };
        let body = serde_json::to_vec(&anchor).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = ObjectPath::from(format!("{ANCHORS}/{:020}.json", anchor.seq));
        let create = PutOptions::from(PutMode::Create);
        match self
            .objects
            .put_opts(&path, PutPayload::from(body), create)
            .await
        {
            Ok(_) => Ok(Some(anchor)),
            // Another replica anchored the same head first: its anchor stands.
            Err(object_store::Error::AlreadyExists { .. }) => self.latest_anchor().await,
            Err(e) => Err(e.into()),
        }
    }

    /// The anchor of the highest entry.
    pub async fn latest_anchor(&self) -> Result<Option<Anchor>> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(ANCHORS);
        let listed: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        // Zero-padded names: the greatest is the newest.
        let Some(newest) = listed.iter().map(|m| &m.location).max() else {
            return Ok(None);
        };
        let bytes = self.objects.get(newest).await?.bytes().await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("audit anchor {newest}: {e}")))
    }
}
