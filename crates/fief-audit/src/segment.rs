//! The log's files: segments, their indexes, the checkpoints; verifying
//! them, recovering the open segment at start-up, moving the first layout's
//! single file in, and retiring old segments.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::index::{self, Record};
use crate::{io, AuditError, Entry, Verified, DIR, GENESIS, LEGACY_FILE};

/// One line of `checkpoints.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Mark {
    /// A segment was closed: where it is in the chain and how it ended.
    Closed(Checkpoint),
    /// Segments up to `through_segment` were removed by retention; the chain
    /// continues from `head` (the hash of entry `through_seq`).
    Retired {
        through_segment: u64,
        through_seq: u64,
        head: String,
        at: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub segment: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// The hash of the segment's last entry.
    pub head: String,
    pub closed_at: String,
}

/// What start-up recovered: the chain's tail and the open segment.
pub(crate) struct Recovered {
    pub seq: u64,
    pub hash: String,
    pub open_number: u64,
    pub open_bytes: u64,
    pub open_first_seq: u64,
    pub open_since: SystemTime,
    pub open_records: Vec<Record>,
    pub torn_tail_bytes: u64,
    pub verified_entries: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn<'a> {
    #[serde(borrow)]
    entry: &'a RawValue,
    hash: String,
}

/// Parses one line (without its newline) and checks its own hash: the entry
/// and that hash.
pub(crate) fn parse_line(
    line: &[u8],
    segment: &Path,
    line_no: u64,
) -> Result<(Entry, String), AuditError> {
    let broken = |reason: String| AuditError::Broken {
        segment: segment.display().to_string(),
        line: line_no,
        reason,
    };
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| broken("not valid UTF-8".into()))?;
    let parsed: LineIn<'_> =
        serde_json::from_str(text).map_err(|e| broken(format!("not a valid audit line: {e}")))?;
    let entry: Entry = serde_json::from_str(parsed.entry.get())
        .map_err(|e| broken(format!("not a valid entry: {e}")))?;
    let actual = hex::encode(Sha256::digest(parsed.entry.get().as_bytes()));
    if actual != parsed.hash {
        return Err(broken("hash does not match the entry's contents".into()));
    }
    Ok((entry, parsed.hash))
}

/// The chain through one file: from `prev` at sequence `first_seq`.
struct Walk {
    last_seq: u64,
    head: String,
    bytes: u64,
    records: Vec<Record>,
    /// Bytes after the last newline (an unfinished write).
    torn: u64,
}

/// Verifies every line of `path`: its hash, its link to the one before,
/// its sequence number. `tolerate_torn_tail` accepts an unfinished last
/// line (no newline) and reports its length instead of failing.
fn walk(
    path: &Path,
    mut prev: String,
    first_seq: u64,
    tolerate_torn_tail: bool,
) -> Result<Walk, AuditError> {
    let mut reader = BufReader::new(File::open(path).map_err(io(path))?);
    let mut buf = Vec::new();
    let mut seq = first_seq;
    let mut offset = 0u64;
    let mut line_no = 0u64;
    let mut records = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            if tolerate_torn_tail {
                return Ok(Walk {
                    last_seq: seq - 1,
                    head: prev,
                    bytes: offset,
                    records,
                    torn: n as u64,
                });
            }
            return Err(AuditError::Broken {
                segment: path.display().to_string(),
                line: line_no,
                reason: "truncated line (no newline)".into(),
            });
        }
        let (entry, hash) = parse_line(&buf, path, line_no)?;
        let broken = |reason: String| AuditError::Broken {
            segment: path.display().to_string(),
            line: line_no,
            reason,
        };
        if entry.prev != prev {
            return Err(broken(
                "does not link to the previous entry (an entry was removed, reordered or altered)"
                    .into(),
            ));
        }
        if entry.seq != seq {
            return Err(broken(format!(
                "sequence number {} where {seq} was expected",
                entry.seq
            )));
        }
        records.push(Record::of(&entry, offset, n));
        offset += n as u64;
        prev = hash;
        seq += 1;
    }
    Ok(Walk {
        last_seq: seq - 1,
        head: prev,
        bytes: offset,
        records,
        torn: 0,
    })
}

/// Where the log's files are.
pub(crate) struct Layout {
    data_dir: PathBuf,
    dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            dir: data_dir.join(DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("segment-{n:06}.log"))
    }

    pub fn index_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("segment-{n:06}.idx"))
    }

    fn checkpoints_path(&self) -> PathBuf {
        self.dir.join("checkpoints.jsonl")
    }

    fn legacy_path(&self) -> PathBuf {
        self.data_dir.join(LEGACY_FILE)
    }

    /// The segment numbers on disk, ascending.
    fn segments(&self) -> Result<Vec<u64>, AuditError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        for e in entries {
            let name = e.map_err(io(&self.dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("segment-")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn marks(&self) -> Result<Vec<Mark>, AuditError> {
        let path = self.checkpoints_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    AuditError::Layout(format!("{} line {}: {e}", path.display(), i + 1))
                })
            })
            .collect()
    }

    fn append_mark(&self, mark: &Mark) -> Result<(), AuditError> {
        let path = self.checkpoints_path();
        let mut line = serde_json::to_vec(mark).map_err(|e| AuditError::Layout(e.to_string()))?;
        line.push(b'\n');
        let mut f = crate::create_private(&path)?;
        f.write_all(&line).map_err(io(&path))?;
        f.sync_data().map_err(io(&path))
    }

    /// Where the kept chain starts: after the last retirement, if any.
    /// The checkpoints of the segments closed since the chain's start.
    fn closed_since(marks: &[Mark], first: u64) -> Vec<&Checkpoint> {
        marks
            .iter()
            .filter_map(|m| match m {
                Mark::Closed(c) if c.segment >= first => Some(c),
                _ => None,
            })
            .collect()
    }

    fn start(marks: &[Mark]) -> (u64, u64, String) {
        marks
            .iter()
            .rev()
            .find_map(|m| match m {
                Mark::Retired {
                    through_segment,
                    through_seq,
                    head,
                    ..
                } => Some((through_segment + 1, through_seq + 1, head.clone())),
                Mark::Closed(_) => None,
            })
            .unwrap_or((1, 1, GENESIS.to_owned()))
    }

    /// The first segment still kept.
    pub fn first_segment(&self) -> Result<u64, AuditError> {
        Ok(Self::start(&self.marks()?).0)
    }

    fn create_dir(&self) -> Result<(), AuditError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))
    }

    /// Moves a first-layout `audit.log` in as segment 1, verified and
    /// closed. `true` if it did.
    pub fn migrate_legacy(&self) -> Result<bool, AuditError> {
        let legacy = self.legacy_path();
        if !legacy.exists() {
            return Ok(false);
        }
        if !self.segments()?.is_empty() {
            return Err(AuditError::Layout(format!(
                "both {} and segments in {} exist; move one away",
                legacy.display(),
                self.dir.display()
            )));
        }
        let w = walk(&legacy, GENESIS.to_owned(), 1, false)?;
        self.create_dir()?;
        let first = self.segment_path(1);
        std::fs::rename(&legacy, &first).map_err(io(&first))?;
        if w.last_seq == 0 {
            return Ok(true);
        }
        self.close(
            &Checkpoint {
                segment: 1,
                first_seq: 1,
                last_seq: w.last_seq,
                bytes: w.bytes,
                head: w.head,
                closed_at: crate::now_rfc3339(),
            },
            &w.records,
        )?;
        Ok(true)
    }

    /// Finds the chain's tail at start-up: every closed segment must be
    /// there with its checkpointed size; the open one (after the last
    /// checkpoint) is verified line by line, and an unfinished last line (a
    /// write a crash cut short, never acknowledged) is cut off.
    pub fn recover(&self) -> Result<Recovered, AuditError> {
        self.create_dir()?;
        let marks = self.marks()?;
        let (first, mut next_seq, mut head) = Self::start(&marks);
        let segments = self.segments()?;
        let closed = Self::closed_since(&marks, first);
        let mut expect = first;
        for c in &closed {
            if c.segment != expect {
                return Err(AuditError::Layout(format!(
                    "checkpoint for segment {} where segment {expect} was expected",
                    c.segment
                )));
            }
            let path = self.segment_path(c.segment);
            let size = std::fs::metadata(&path)
                .map_err(|_| AuditError::Layout(format!("segment {} is missing", c.segment)))?
                .len();
            if size != c.bytes || c.first_seq != next_seq {
                return Err(AuditError::Layout(format!(
                    "segment {} is not as it was closed ({size} bytes, checkpoint says {}); \
                     run `fief audit verify`",
                    c.segment, c.bytes
                )));
            }
            next_seq = c.last_seq + 1;
            head = c.head.clone();
            expect += 1;
        }
        // Segments beyond the checkpoints: normally just the open one.
        let open: Vec<u64> = segments.iter().copied().filter(|n| *n >= expect).collect();
        if let Some(stray) = segments.iter().find(|n| **n < first) {
            return Err(AuditError::Layout(format!(
                "segment {stray} should have been removed by retention"
            )));
        }
        for (i, n) in open.iter().enumerate() {
            if *n != expect + i as u64 {
                return Err(AuditError::Layout(format!(
                    "segment {} is missing",
                    expect + i as u64
                )));
            }
        }
        let mut verified = 0;
        let mut result = None;
        for (i, n) in open.iter().enumerate() {
            let last = i + 1 == open.len();
            let path = self.segment_path(*n);
            let w = walk(&path, head.clone(), next_seq, last)?;
            verified += w.last_seq + 1 - next_seq;
            if w.torn > 0 {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(w.bytes).map_err(io(&path))?;
                f.sync_data().map_err(io(&path))?;
            }
            if !last {
                // A segment closed but not checkpointed (a crash between the two).
                self.close(
                    &Checkpoint {
                        segment: *n,
                        first_seq: next_seq,
                        last_seq: w.last_seq,
                        bytes: w.bytes,
                        head: w.head.clone(),
                        closed_at: crate::now_rfc3339(),
                    },
                    &w.records,
                )?;
            }
            let first_seq = next_seq;
            next_seq = w.last_seq + 1;
            head = w.head.clone();
            result = Some((*n, w, first_seq));
        }
        let (open_number, w, open_first_seq) = match result {
            Some(r) => r,
            None => (
                expect,
                Walk {
                    last_seq: next_seq - 1,
                    head: head.clone(),
                    bytes: 0,
                    records: Vec::new(),
                    torn: 0,
                },
                next_seq,
            ),
        };
        Ok(Recovered {
            seq: next_seq - 1,
            hash: head,
            open_number,
            open_bytes: w.bytes,
            open_first_seq,
            open_since: SystemTime::now(),
            open_records: w.records,
            torn_tail_bytes: w.torn,
            verified_entries: verified,
        })
    }

    pub fn append_file(&self, n: u64) -> Result<File, AuditError> {
        crate::create_private(&self.segment_path(n))
    }

    /// Closes a segment: its index, then its checkpoint.
    pub fn close(&self, c: &Checkpoint, records: &[Record]) -> Result<(), AuditError> {
        index::write(&self.index_path(c.segment), records)?;
        self.append_mark(&Mark::Closed(c.clone()))
    }

    /// Removes the oldest closed segments whose last entry was written
    /// before `cutoff`, recording where the chain now starts. The open
    /// segment and the newest closed one are always kept.
    pub fn retire_before(&self, cutoff: SystemTime) -> Result<(), AuditError> {
        let marks = self.marks()?;
        let first = Self::start(&marks).0;
        let closed = Self::closed_since(&marks, first);
        let cutoff_ms = index::ts_ms(&humantime::format_rfc3339_millis(cutoff).to_string());
        let mut retire: Option<&Checkpoint> = None;
        for c in closed.iter().take(closed.len().saturating_sub(1)) {
            if index::ts_ms(&c.closed_at) < cutoff_ms {
                retire = Some(c);
            } else {
                break;
            }
        }
        let Some(last) = retire else {
            return Ok(());
        };
        // The mark first: a crash after it leaves files retention removes
        // again, never a chain that no longer says where it starts.
        self.append_mark(&Mark::Retired {
            through_segment: last.segment,
            through_seq: last.last_seq,
            head: last.head.clone(),
            at: crate::now_rfc3339(),
        })?;
        for n in first..=last.segment {
            for path in [self.segment_path(n), self.index_path(n)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        Ok(())
    }

    /// Checks everything: every segment kept, in order, each line's hash and
    /// link, each segment's first entry linking to the previous segment's
    /// last, and each checkpoint matching its segment. A first-layout
    /// `audit.log` is verified as one segment.
    pub fn verify_all(&self) -> Result<Verified, AuditError> {
        let legacy = self.legacy_path();
        let segments = self.segments()?;
        if segments.is_empty() && legacy.exists() {
            let w = walk(&legacy, GENESIS.to_owned(), 1, false)?;
            return Ok(Verified {
                entries: w.last_seq,
                first_seq: 1,
                segments: 1,
                last_hash: w.head,
            });
        }
        let marks = self.marks()?;
        let (first, first_seq, mut head) = Self::start(&marks);
        let mut next_seq = first_seq;
        let last = segments.last().copied().unwrap_or(first.saturating_sub(1));
        if let Some(stray) = segments.iter().find(|n| **n < first) {
            return Err(AuditError::Layout(format!(
                "segment {stray} is before where the chain starts (segment {first})"
            )));
        }
        for n in first..=last {
            if !segments.contains(&n) {
                return Err(AuditError::Layout(format!(
                    "segment {n} is missing (segments {first} to {last} are expected)"
                )));
            }
            let path = self.segment_path(n);
            let w = walk(&path, head.clone(), next_seq, false).map_err(|e| match e {
                AuditError::Broken { segment, line, reason } if line == 1 && reason.contains("link") => {
                    AuditError::Broken {
                        segment,
                        line,
                        reason: format!(
                            "{reason}; the segment does not continue the one before it (missing or reordered)"
                        ),
                    }
                }
                other => other,
            })?;
            let checkpoint = marks.iter().find_map(|m| match m {
                Mark::Closed(c) if c.segment == n => Some(c),
                _ => None,
            });
            if let Some(c) = checkpoint {
                if c.first_seq != next_seq
                    || c.last_seq != w.last_seq
                    || c.head != w.head
                    || c.bytes != w.bytes
                {
                    return Err(AuditError::Layout(format!(
                        "segment {n} does not match its checkpoint (entries {}..={}, head {}); it was changed after it was closed",
                        c.first_seq, c.last_seq, c.head
                    )));
                }
            } else if n != last {
                return Err(AuditError::Layout(format!(
                    "segment {n} has no checkpoint but is not the newest"
                )));
            }
            next_seq = w.last_seq + 1;
            head = w.head;
        }
        Ok(Verified {
            entries: next_seq - first_seq,
            first_seq,
            segments: (last + 1).saturating_sub(first),
            last_hash: head,
        })
    }
}
