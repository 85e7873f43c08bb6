//! The audit log (invariant 8): every authorisation decision and every admin
//! change, appended as one JSON line each and chained by SHA-256.
//!
//! Each line is `{"entry":{...},"hash":"<hex>"}` where `hash` is the SHA-256 of
//! the exact bytes of `entry`, and `entry.prev` is the previous line's hash.
//! Because the hash covers the raw bytes, changing any byte of a line breaks
//! either its JSON, its hash, or the next line's link.
//!
//! The log is a directory of segments (`segment-000001.log`, …), one chain
//! across all of them: a segment's first entry links to the previous
//! segment's last. A segment is closed by size or age; closing writes its
//! index (`.idx`: tenant, decision and time of every entry, sorted for
//! lookup) and a checkpoint line (segment, entries, bytes, head hash) to
//! `checkpoints.jsonl`. Opening verifies only what follows the last
//! checkpoint (and that every closed segment still has its checkpointed
//! size); [`verify_dir`] checks everything. Retention removes whole closed
//! segments and records where the chain now starts.
//!
//! Appends are group commits: whoever finds no write in progress writes
//! every entry queued so far in one `write`, and each caller waits until its
//! own entry is written (fail closed: an error reaches every waiter).
//! Durability beyond the page cache is [`Fsync`].

mod chain;
mod index;
mod segment;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use chain::{chain, check_anchor, seal, Anchor, Follower, Sealed};
pub use index::Query;
use index::Record;
use segment::{Checkpoint, Layout};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The log's directory inside the data directory.
pub const DIR: &str = "audit";
/// The single file of the first layout, moved into `DIR` on first open.
pub const LEGACY_FILE: &str = "audit.log";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {segment} entry {line}: {reason}")]
    Broken {
        segment: String,
        line: u64,
        reason: String,
    },
    #[error("audit log: {0}")]
    Layout(String),
    #[error("audit log is unavailable after an earlier write failure")]
    Poisoned,
    #[error(
        "audit log ends at entry {last}, but an anchor taken at {} recorded entry {} ({}): \
         the newest entries were removed",
        anchor.at, anchor.seq, anchor.hash
    )]
    Truncated { last: u64, anchor: chain::Anchor },
    /// The database holding the log failed.
    #[error("audit log: {0}")]
    Store(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Fault injection (feature `fault-injection`, tests only): appends fail as
/// a full disk would make them, for every log or for the logs under one
/// directory (so one test's full disk is not every concurrent test's).
#[cfg(feature = "fault-injection")]
pub mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static FAIL_APPENDS: AtomicBool = AtomicBool::new(false);
    static FAIL_UNDER: Mutex<Option<PathBuf>> = Mutex::new(None);

    /// Every log's appends fail (callers serialise their tests).
    pub fn fail_appends(on: bool) {
        FAIL_APPENDS.store(on, Ordering::SeqCst);
    }

    /// Appends of the logs under `dir` fail; `None` ends it.
    pub fn fail_appends_under(dir: Option<&Path>) {
        if let Ok(mut under) = FAIL_UNDER.lock() {
            *under = dir.map(Path::to_path_buf);
        }
    }

    pub(crate) fn appends_fail(dir: &Path) -> bool {
        FAIL_APPENDS.load(Ordering::SeqCst)
            || FAIL_UNDER
                .lock()
                .is_ok_and(|u| u.as_deref().is_some_and(|u| dir.starts_with(u)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Authz,
    Admin,
    /// Refused credentials, aggregated per credential kind and source.
    Authn,
    /// What an allowed call consumed (a foundation-model call's tokens):
    /// counts and names, never content.
    Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// What a caller records; sequence, time and chain are added by the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub kind: Kind,
    pub request_id: String,
    pub principal: String,
    /// The principal's tenant, when the principal is a tenant's.
    pub tenant: Option<String>,
    /// Which incarnation of that tenant (ids may be reused after offboarding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    pub action: String,
    pub resource: String,
    pub decision: Decision,
    /// Ids of the policies that decided (Cedar's determining policies).
    pub policies: Vec<String>,
    pub reason: Option<String>,
    /// For a role session: the principal (and tenant) that assumed the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A usage entry's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
}

/// How durable an entry is once its request has been answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Flushed to disk before the answer: survives a power loss; each
    /// group commit waits for the disk.
    Always,
    /// Written before the answer (survives the process being killed), and
    /// flushed to disk at least every 100 ms: a power loss can take the
    /// last 100 ms.
    Batch,
    /// Written before the answer; flushed when the OS decides.
    Never,
}

/// How the log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub fsync: Fsync,
    /// A segment is closed once it reaches this size...
    pub segment_bytes: u64,
    /// ...or this age.
    pub segment_secs: u64,
    /// Closed segments whose newest entry is older than this are removed.
    pub retention_days: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: Fsync::Batch,
            segment_bytes: 16 * 1024 * 1024,
            segment_secs: 24 * 3600,
            retention_days: None,
        }
    }
}

/// How far writes have got: the last sequence number on file, and whether
/// a write failed (every later waiter then fails too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    seq: u64,
    failed: bool,
}

/// The segment being appended to.
struct Open {
    number: u64,
    file: Arc<File>,
    /// Bytes on file (what the queued lines' offsets start from).
    bytes: u64,
    /// Bytes on file plus bytes queued.
    queued_bytes: u64,
    first_seq: u64,
    opened_at: SystemTime,
    /// Index records of its entries, in sequence order (queued ones too).
    records: Vec<Record>,
}

struct Tail {
    seq: u64,
    /// The hash of the last entry queued, and of the last one on file.
    hash: String,
    written_hash: String,
    /// Lines not yet written, and the sequence number of the last of them.
    queued: Vec<u8>,
    queued_through: u64,
    writing: bool,
    poisoned: bool,
    open: Open,
    /// Set when the file holds data not yet flushed to disk.
    dirty: bool,
}

/// What opening the log found and did, for the caller to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of an unfinished last line (a write cut short by a crash) that
    /// were removed from the open segment.
    pub torn_tail_bytes: u64,
    /// The first layout's single file was moved into the segments.
    pub migrated_legacy: bool,
    /// Entries verified at opening (those after the last checkpoint).
    pub verified_entries: u64,
}

/// An open, append-only audit log.
pub struct AuditLog {
    layout: Layout,
    options: Options,
    tail: Mutex<Tail>,
    written: tokio::sync::watch::Sender<Written>,
    opened: Opened,
}

impl AuditLog {
    /// Opens (or creates) the log in `data_dir/audit`, moving a first-layout
    /// `audit.log` into it, and verifies what follows the last checkpoint,
    /// so a tampered log is noticed at start-up rather than extended.
    pub fn open(data_dir: &Path, options: Options) -> Result<Self, AuditError> {
        let layout = Layout::new(data_dir);
        let migrated_legacy = layout.migrate_legacy()?;
        let state = layout.recover()?;
        let opened = Opened {
            torn_tail_bytes: state.torn_tail_bytes,
            migrated_legacy,
            verified_entries: state.verified_entries,
        };
        let file = layout.append_file(state.open_number)?;
        let open = Open {
            number: state.open_number,
            file: Arc::new(file),
            bytes: state.open_bytes,
            queued_bytes: state.open_bytes,
            first_seq: state.open_first_seq,
            opened_at: state.open_since,
            records: state.open_records,
        };
        let (written, _) = tokio::sync::watch::channel(Written {
            seq: state.seq,
            failed: false,
        });
        let log = Self {
            layout,
            options,
            tail: Mutex::new(Tail {
                seq: state.seq,
                written_hash: state.hash.clone(),
                hash: state.hash,
                queued: Vec::new(),
                queued_through: state.seq,
                writing: false,
                poisoned: false,
                open,
                dirty: false,
            }),
            written,
            opened,
        };
        log.apply_retention()?;
        Ok(log)
    }

    /// What opening found and did.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Appends one event; returns its sequence number once it is written.
    /// An error here must fail the request that caused it (fail closed): an
    /// unaudited decision is void.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let (seq, lead) = self.enqueue(event)?;
        if lead {
            self.write_queued().await;
        }
        let mut rx = self.written.subscribe();
        let w = *rx
            .wait_for(|w| w.seq >= seq || w.failed)
            .await
            .map_err(|_| AuditError::Poisoned)?;
        // Written before any failure counts; after one, nothing does.
        if w.seq >= seq {
            Ok(seq)
        } else {
            Err(AuditError::Poisoned)
        }
    }

    /// Builds the entry, chains it, and queues its line. `true` if the
    /// caller is to write the queue (nobody else is writing).
    fn enqueue(&self, event: Event) -> Result<(u64, bool), AuditError> {
        let mut tail = self.tail.lock().map_err(|_| AuditError::Poisoned)?;
        if tail.poisoned {
            return Err(AuditError::Poisoned);
        }
        #[cfg(feature = "fault-injection")]
        if faults::appends_fail(self.layout.dir()) {
            return Err(AuditError::Io {
                path: self.layout.dir().to_owned(),
                source: std::io::Error::other("fault injection: no space left on device"),
            });
        }
        let entry = Entry {
            seq: tail.seq + 1,
            ts: now_rfc3339(),
            prev: tail.hash.clone(),
            event,
        };
        let (line, hash) = encode(&entry)?;
        let record = Record::of(&entry, tail.open.queued_bytes, line.len());
        tail.open.queued_bytes += line.len() as u64;
        tail.open.records.push(record);
        tail.queued.extend_from_slice(&line);
        tail.seq = entry.seq;
        tail.queued_through = entry.seq;
        tail.hash = hash;
        let lead = !tail.writing;
        tail.writing = true;
        Ok((entry.seq, lead))
    }

    /// Writes everything queued, batch after batch, until the queue is
    /// empty; then tells every waiter how far the file got.
    async fn write_queued(&self) {
        loop {
            let batch = {
                let Ok(mut tail) = self.tail.lock() else {
                    self.fail();
                    return;
                };
                if tail.queued.is_empty() {
                    tail.writing = false;
                    return;
                }
                if let Err(e) = self.rotate_if_due(&mut tail) {
                    eprintln!("audit log: cannot close a segment: {e}");
                    tail.poisoned = true;
                    drop(tail);
                    self.fail();
                    return;
                }
                let bytes = std::mem::take(&mut tail.queued);
                (
                    bytes,
                    tail.queued_through,
                    tail.hash.clone(),
                    tail.open.file.clone(),
                )
            };
            let (bytes, through, through_hash, file) = batch;
            let len = bytes.len() as u64;
            let wrote = match self.options.fsync {
                Fsync::Always => tokio::task::spawn_blocking(move || {
                    (&*file).write_all(&bytes)?;
                    file.sync_data()
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
                // A write to the page cache takes microseconds: not worth
                // a thread hop.
                Fsync::Batch | Fsync::Never => (&*file).write_all(&bytes),
            };
            let Ok(mut tail) = self.tail.lock() else {
                self.fail();
                return;
            };
            match wrote {
                Ok(()) => {
                    tail.open.bytes += len;
                    tail.written_hash = through_hash;
                    tail.dirty = self.options.fsync != Fsync::Always;
                    drop(tail);
                    self.written.send_modify(|w| w.seq = w.seq.max(through));
                }
                Err(e) => {
                    eprintln!("audit log: write failed: {e}");
                    // A partial line would break the chain for every later
                    // entry: nothing more is appended.
                    tail.poisoned = true;
                    tail.writing = false;
                    drop(tail);
                    self.fail();
                    return;
                }
            }
        }
    }

    fn fail(&self) {
        self.written.send_modify(|w| w.failed = true);
    }

    /// Closes the open segment when it is full or old enough (only between
    /// batches, with nothing of it queued), and opens the next.
    fn rotate_if_due(&self, tail: &mut Tail) -> Result<(), AuditError> {
        let open = &tail.open;
        let full = open.bytes >= self.options.segment_bytes;
        let old = open
            .opened_at
            .elapsed()
            .is_ok_and(|age| age >= Duration::from_secs(self.options.segment_secs));
        if open.bytes == 0 || !(full || old) {
            return Ok(());
        }
        // Queued lines belong to the next segment: re-base their records.
        let queued_from = open
            .records
            .iter()
            .position(|r| r.offset >= open.bytes)
            .unwrap_or(open.records.len());
        let mut moving = tail.open.records.split_off(queued_from);
        let base = tail.open.bytes;
        for r in &mut moving {
            r.offset -= base;
        }
        let closed_through = tail
            .open
            .records
            .last()
            .map_or(tail.open.first_seq.saturating_sub(1), |r| r.seq);
        let head = tail.written_hash.clone();
        tail.open.file.sync_data().map_err(io(self.layout.dir()))?;
        self.layout.close(
            &Checkpoint {
                segment: tail.open.number,
                first_seq: tail.open.first_seq,
                last_seq: closed_through,
                bytes: tail.open.bytes,
                head,
                closed_at: now_rfc3339(),
            },
            &tail.open.records,
        )?;
        let number = tail.open.number + 1;
        let file = self.layout.append_file(number)?;
        let queued_bytes = tail.open.queued_bytes - base;
        tail.open = Open {
            number,
            file: Arc::new(file),
            bytes: 0,
            queued_bytes,
            first_seq: closed_through + 1,
            opened_at: SystemTime::now(),
            records: moving,
        };
        tail.dirty = false;
        self.apply_retention_locked()?;
        Ok(())
    }

    /// Flushes the open segment to disk if a write left it dirty (the
    /// `batch` policy calls this every 100 ms).
    pub fn flush(&self) -> Result<(), AuditError> {
        let file = {
            let mut tail = self.tail.lock().map_err(|_| AuditError::Poisoned)?;
            if !tail.dirty {
                return Ok(());
            }
            tail.dirty = false;
            tail.open.file.clone()
        };
        file.sync_data().map_err(io(self.layout.dir()))
    }

    fn apply_retention(&self) -> Result<(), AuditError> {
        let _tail = self.tail.lock().map_err(|_| AuditError::Poisoned)?;
        self.apply_retention_locked()
    }

    /// Removes closed segments older than the retention (whole segments,
    /// oldest first), recording where the chain now starts.
    fn apply_retention_locked(&self) -> Result<(), AuditError> {
        let Some(days) = self.options.retention_days else {
            return Ok(());
        };
        let cutoff = SystemTime::now() - Duration::from_secs(days * 86_400);
        self.layout.retire_before(cutoff)
    }

    /// Entries matching `query`, newest last (at most `query.limit`, the
    /// most recent). Reads files: call it off the async workers.
    pub fn query(&self, query: &Query) -> Result<Vec<Entry>, AuditError> {
        let (open_number, open_records) = {
            let tail = self.tail.lock().map_err(|_| AuditError::Poisoned)?;
            let on_file = tail.open.bytes;
            let records: Vec<Record> = tail
                .open
                .records
                .iter()
                .filter(|r| r.offset + u64::from(r.len) <= on_file && query.matches(r))
                .cloned()
                .collect();
            (tail.open.number, records)
        };
        index::run(&self.layout, query, open_number, &open_records)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }
}

/// One entry as its line (with the newline) and its hash: exactly what
/// serialising `{"entry": <raw entry>, "hash": "<hex>"}` gives, written
/// directly (the entry's bytes are what the hash covers).
fn encode(entry: &Entry) -> Result<(Vec<u8>, String), AuditError> {
    let (body, hash) = seal(entry)?;
    let mut line = Vec::with_capacity(body.len() + hash.len() + 22);
    line.extend_from_slice(b"{\"entry\":");
    line.extend_from_slice(body.as_bytes());
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// Sequence number of the first entry still kept (after retention).
    pub first_seq: u64,
    pub segments: u64,
    pub last_hash: String,
}

/// Checks the whole log in `data_dir` (the segments, or a first-layout
/// `audit.log`): every line's hash, every link, every segment's place in
/// the chain and its checkpoint. The error names the first bad entry.
pub fn verify_dir(data_dir: &Path) -> Result<Verified, AuditError> {
    Layout::new(data_dir).verify_all()
}

/// Creates a file that only its owner can read and write.
fn create_private(path: &Path) -> Result<File, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// The time an entry is stamped with.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
