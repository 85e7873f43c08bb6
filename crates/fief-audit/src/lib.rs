//! The audit log (invariant 8): every authorisation decision and every admin
//! change, appended as one JSON line each and chained by SHA-256.
//!
//! Each line is `{"entry":{...},"hash":"<hex>"}` where `hash` is the SHA-256 of
//! the exact bytes of `entry`, and `entry.prev` is the previous line's hash.
//! Because the hash covers the raw bytes, changing any byte of a line breaks
//! either its JSON, its hash, or the next line's link.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Fault injection (feature `fault-injection`, tests only): appends fail as
/// a full disk would make them.
#[cfg(feature = "fault-injection")]
pub mod faults {
    use std::sync::atomic::{AtomicBool, Ordering};

    static FAIL_APPENDS: AtomicBool = AtomicBool::new(false);

    pub fn fail_appends(on: bool) {
        FAIL_APPENDS.store(on, Ordering::SeqCst);
    }

    pub(crate) fn appends_fail() -> bool {
        FAIL_APPENDS.load(Ordering::SeqCst)
    }
}

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log entry {line}: {reason}")]
    Broken { line: u64, reason: String },
    #[error("audit log is unavailable after an earlier write failure")]
    Poisoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Authz,
    Admin,
    /// Refused credentials, aggregated per credential kind and source.
    Authn,
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

#[derive(Serialize)]
struct LineOut<'a> {
    entry: &'a RawValue,
    hash: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn<'a> {
    #[serde(borrow)]
    entry: &'a RawValue,
    hash: String,
}

struct Tail {
    file: File,
    seq: u64,
    hash: String,
    poisoned: bool,
}

/// An open, append-only audit log.
pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

impl AuditLog {
    /// Opens (or creates) the log and verifies the existing chain, so a
    /// tampered log is noticed at start-up rather than extended.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let (seq, hash) = if path.exists() {
            verify(path)?.tail()
        } else {
            (0, GENESIS.to_owned())
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        Ok(Self {
            path: path.to_owned(),
            tail: Mutex::new(Tail {
                file,
                seq,
                hash,
                poisoned: false,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; returns its sequence number. An error here must fail
    /// the request that caused it (fail closed): an unaudited decision is void.
    pub fn append(&self, event: Event) -> Result<u64, AuditError> {
        let mut tail = self.tail.lock().map_err(|_| AuditError::Poisoned)?;
        if tail.poisoned {
            return Err(AuditError::Poisoned);
        }
        #[cfg(feature = "fault-injection")]
        if faults::appends_fail() {
            return Err(AuditError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("fault injection: no space left on device"),
            });
        }
        let entry = Entry {
            seq: tail.seq + 1,
            ts: now_rfc3339(),
            prev: tail.hash.clone(),
            event,
        };
        let body = serde_json::to_string(&entry).map_err(|e| AuditError::Broken {
            line: entry.seq,
            reason: e.to_string(),
        })?;
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let raw = RawValue::from_string(body).map_err(|e| AuditError::Broken {
            line: entry.seq,
            reason: e.to_string(),
        })?;
        let mut line = serde_json::to_vec(&LineOut {
            entry: &raw,
            hash: &hash,
        })
        .map_err(|e| AuditError::Broken {
            line: entry.seq,
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        if let Err(source) = tail.file.write_all(&line) {
            // A partial line would break the chain for every later entry.
            tail.poisoned = true;
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        tail.seq = entry.seq;
        tail.hash = hash;
        Ok(entry.seq)
    }
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub last_hash: String,
}

impl Verified {
    fn tail(self) -> (u64, String) {
        (self.entries, self.last_hash)
    }
}

/// Checks the whole chain; the error names the first bad entry (1-based line).
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0u64;
    for_each_line(path, |line_no, line| {
        let broken = |reason: String| AuditError::Broken {
            line: line_no,
            reason,
        };
        let parsed: LineIn<'_> = serde_json::from_str(line)
            .map_err(|e| broken(format!("not a valid audit line: {e}")))?;
        let entry: Entry = serde_json::from_str(parsed.entry.get())
            .map_err(|e| broken(format!("not a valid entry: {e}")))?;
        let actual = hex::encode(Sha256::digest(parsed.entry.get().as_bytes()));
        if actual != parsed.hash {
            return Err(broken("hash does not match the entry's contents".into()));
        }
        if entry.prev != prev {
            return Err(broken(
                "does not link to the previous entry (an entry was removed, reordered or altered)"
                    .into(),
            ));
        }
        if entry.seq != line_no {
            return Err(broken(format!(
                "sequence number {} where {line_no} was expected",
                entry.seq
            )));
        }
        prev = parsed.hash;
        count = line_no;
        Ok(())
    })?;
    Ok(Verified {
        entries: count,
        last_hash: prev,
    })
}

/// Reads entries, newest last, keeping those `keep` accepts (at most `limit`,
/// the most recent ones).
pub fn read_entries(
    path: &Path,
    limit: usize,
    keep: impl Fn(&Entry) -> bool,
) -> Result<Vec<Entry>, AuditError> {
    let mut out = std::collections::VecDeque::new();
    if !path.exists() {
        return Ok(Vec::new());
    }
    for_each_line(path, |line_no, line| {
        let parsed: LineIn<'_> = serde_json::from_str(line).map_err(|e| AuditError::Broken {
            line: line_no,
            reason: e.to_string(),
        })?;
        let entry: Entry =
            serde_json::from_str(parsed.entry.get()).map_err(|e| AuditError::Broken {
                line: line_no,
                reason: e.to_string(),
            })?;
        if keep(&entry) {
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back(entry);
        }
        Ok(())
    })?;
    Ok(out.into())
}

fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, &str) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let Some(b'\n') = buf.last() else {
            return Err(AuditError::Broken {
                line: line_no,
                reason: "truncated line (no newline)".into(),
            });
        };
        let text = std::str::from_utf8(&buf[..buf.len() - 1]).map_err(|_| AuditError::Broken {
            line: line_no,
            reason: "not valid UTF-8".into(),
        })?;
        f(line_no, text)?;
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event {
            kind: if i.is_multiple_of(2) {
                Kind::Authz
            } else {
                Kind::Admin
            },
            request_id: format!("req-{i}"),
            principal: format!("Fief::ApiKey::\"k{i}\""),
            tenant: Some("aa".into()),
            incarnation: i
                .is_multiple_of(5)
                .then(|| "0123456789abcdef0123456789abcdef".into()),
            action: "InvokeModel".into(),
            resource: "frn:fief:model:aa/m".into(),
            decision: if i.is_multiple_of(3) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            policies: vec!["platform-guardrail".into()],
            reason: None,
            source: i.is_multiple_of(4).then(|| "api-key:src (bb)".into()),
        }
    }

    fn write_log(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            assert_eq!(log.append(event(i)).unwrap(), i as u64 + 1);
        }
        (dir, path)
    }

    #[test]
    fn untouched_log_verifies_and_reopens_at_its_tail() {
        let (_d, path) = write_log(5);
        assert_eq!(verify(&path).unwrap().entries, 5);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.append(event(9)).unwrap(), 6);
        assert_eq!(verify(&path).unwrap().entries, 6);
        let denies = read_entries(&path, 10, |e| e.event.decision == Decision::Deny).unwrap();
        assert_eq!(
            denies.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 4, 6]
        );
    }

    /// Every single-byte change anywhere in the file is detected, and the
    /// error names the line that holds the changed byte (or the one after
    /// it, when the change removed a newline).
    #[test]
    fn every_single_byte_change_is_detected_and_located() {
        let (_d, path) = write_log(4);
        let original = std::fs::read(&path).unwrap();
        for pos in 0..original.len() {
            for replacement in [b'x', b'0', b' '] {
                if original[pos] == replacement {
                    continue;
                }
                let mut bytes = original.clone();
                bytes[pos] = replacement;
                std::fs::write(&path, &bytes).unwrap();
                let line_of_pos =
                    original[..pos].iter().filter(|b| **b == b'\n').count() as u64 + 1;
                match verify(&path) {
                    Err(AuditError::Broken { line, .. }) => {
                        assert!(
                            line == line_of_pos || line == line_of_pos + 1,
                            "pos {pos}: line {line}"
                        )
                    }
                    other => panic!("byte {pos} -> {replacement}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn removed_or_reordered_entries_are_detected() {
        let (_d, path) = write_log(4);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 2, .. })
        ));
        std::fs::write(&path, format!("{}\n{}\n", lines[1], lines[0])).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 1, .. })
        ));
        // A tampered log is refused at start-up instead of being extended.
        assert!(AuditLog::open(&path).is_err());
    }
}
