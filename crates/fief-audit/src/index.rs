//! The audit index: for every entry, where its line is and what the
//! operator filters on (tenant, decision, time). A closed segment's index
//! is a file of fixed-size records sorted by (tenant, sequence), so the
//! entries of one tenant are found by binary search without reading the
//! segment; the open segment's records are kept in memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::segment::{self, Layout};
use crate::{io, AuditError, Decision, Entry, Kind};

const RECORD: usize = 40;

/// Where one entry is, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    /// Byte offset of the line in its segment, and its length.
    pub offset: u64,
    pub len: u32,
    /// Milliseconds since the epoch (parsed from the entry's `ts`).
    pub ts_ms: i64,
    /// `tenant_key` of the entry's tenant (0: none).
    pub tenant: u64,
    pub decision: u8,
    pub kind: u8,
}

/// The first 8 bytes of the tenant id's SHA-256: the same in every process.
pub(crate) fn tenant_key(tenant: Option<&str>) -> u64 {
    match tenant {
        None => 0,
        Some(t) => {
            let d = Sha256::digest(t.as_bytes());
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]).max(1)
        }
    }
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Authz => 1,
        Kind::Admin => 2,
        Kind::Authn => 3,
        Kind::Usage => 4,
    }
}

fn decision_code(d: Decision) -> u8 {
    match d {
        Decision::Allow => 1,
        Decision::Deny => 2,
    }
}

pub(crate) fn ts_ms(ts: &str) -> i64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Record {
    pub fn of(entry: &Entry, offset: u64, len: usize) -> Self {
        Self {
            seq: entry.seq,
            offset,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            ts_ms: ts_ms(&entry.ts),
            tenant: tenant_key(entry.event.tenant.as_deref()),
            decision: decision_code(entry.event.decision),
            kind: kind_code(entry.event.kind),
        }
    }

    fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[0..8].copy_from_slice(&self.tenant.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b[28..36].copy_from_slice(&self.ts_ms.to_be_bytes());
        b[36] = self.decision;
        b[37] = self.kind;
        b
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[24..28]);
        Self {
            tenant: u64::from_be_bytes(u64_at(0)),
            seq: u64::from_be_bytes(u64_at(8)),
            offset: u64::from_be_bytes(u64_at(16)),
            len: u32::from_be_bytes(len),
            ts_ms: i64::from_be_bytes(u64_at(28)),
            decision: b[36],
            kind: b[37],
        }
    }
}

/// Writes a closed segment's index: records sorted by (tenant, sequence).
pub(crate) fn write(path: &Path, records: &[Record]) -> Result<(), AuditError> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.tenant, r.seq));
    let mut bytes = Vec::with_capacity(sorted.len() * RECORD);
    for r in sorted {
        bytes.extend_from_slice(&r.encode());
    }
    let tmp = path.with_extension("idx.tmp");
    {
        let mut f = crate::create_private(&tmp)?;
        f.set_len(0).map_err(io(&tmp))?;
        std::io::Write::write_all(&mut f, &bytes).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// What the operator asks of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub tenant: Option<String>,
    pub decision: Option<Decision>,
    /// Entries at or after this time (milliseconds since the epoch)...
    pub since_ms: Option<i64>,
    /// ...and before this one.
    pub until_ms: Option<i64>,
    pub limit: usize,
    /// Only entries of this kind.
    pub kind: Option<Kind>,
}

impl Query {
    pub(crate) fn matches(&self, r: &Record) -> bool {
        self.tenant
            .as_deref()
            .is_none_or(|t| r.tenant == tenant_key(Some(t)))
            && self.decision.is_none_or(|d| r.decision == decision_code(d))
            && self.kind.is_none_or(|k| r.kind == kind_code(k))
            && self.since_ms.is_none_or(|s| r.ts_ms >= s)
            && self.until_ms.is_none_or(|u| r.ts_ms < u)
    }

    /// Checks what the record cannot tell: the tenant itself, not its key.
    fn accepts(&self, e: &Entry) -> bool {
        self.tenant
            .as_deref()
            .is_none_or(|t| e.event.tenant.as_deref() == Some(t))
    }
}

/// A closed segment's index, read by binary search.
struct IndexFile {
    file: File,
    count: u64,
}

impl IndexFile {
    fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        Ok(Self {
            file,
            count: len / RECORD as u64,
        })
    }

    fn read(&self, at: u64, n: u64, path: &Path) -> Result<Vec<Record>, AuditError> {
        let mut buf = vec![0u8; (n as usize) * RECORD];
        self.file
            .read_exact_at(&mut buf, at * RECORD as u64)
            .map_err(io(path))?;
        Ok(buf.chunks_exact(RECORD).map(Record::decode).collect())
    }

    /// The first position whose (tenant, seq) is at least `key`.
    fn lower_bound(&self, key: (u64, u64), path: &Path) -> Result<u64, AuditError> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = &self.read(mid, 1, path)?[0];
            if (r.tenant, r.seq) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Matching records of the segment, newest first, at most `want`.
    fn newest(&self, query: &Query, want: usize, path: &Path) -> Result<Vec<Record>, AuditError> {
        let mut out = Vec::new();
        match query.tenant.as_deref() {
            Some(t) => {
                let key = tenant_key(Some(t));
                let start = self.lower_bound((key, 0), path)?;
                let mut end = self.lower_bound((key, u64::MAX), path)?;
                // Backwards through the tenant's range, a chunk at a time.
                while end > start && out.len() < want {
                    let from = end.saturating_sub(256).max(start);
                    let chunk = self.read(from, end - from, path)?;
                    out.extend(chunk.into_iter().rev().filter(|r| query.matches(r)));
                    end = from;
                }
            }
            None => {
                let mut all = self.read(0, self.count, path)?;
                all.sort_by_key(|r| std::cmp::Reverse(r.seq));
                out.extend(all.into_iter().filter(|r| query.matches(r)));
            }
        }
        Ok(out)
    }
}

/// Runs `query` over every segment, newest first: the open one's records
/// (already filtered), then each closed one's index; reads the lines it
/// picked and returns them oldest first.
pub(crate) fn run(
    layout: &Layout,
    query: &Query,
    open_number: u64,
    open_records: &[Record],
) -> Result<Vec<Entry>, AuditError> {
    let limit = query.limit.max(1);
    let mut picked: Vec<(u64, Entry)> = Vec::new();
    let take = |segment: u64, records: Vec<Record>, picked: &mut Vec<(u64, Entry)>| {
        let path = layout.segment_path(segment);
        let file = File::open(&path).map_err(io(&path))?;
        for r in records {
            if picked.len() >= limit {
                break;
            }
            let mut line = vec![0u8; r.len as usize];
            file.read_exact_at(&mut line, r.offset).map_err(io(&path))?;
            let entry = segment::parse_line(&line, &path, r.seq)?.0;
            if entry.seq == r.seq && query.accepts(&entry) {
                picked.push((entry.seq, entry));
            }
        }
        Ok::<_, AuditError>(())
    };
    let newest_open: Vec<Record> = open_records.iter().rev().cloned().collect();
    take(open_number, newest_open, &mut picked)?;
    let first = layout.first_segment()?;
    let mut segment = open_number;
    while picked.len() < limit && segment > first {
        segment -= 1;
        let path = layout.index_path(segment);
        if !path.exists() {
            continue;
        }
        let index = IndexFile::open(&path)?;
        let records = index.newest(query, limit - picked.len(), &path)?;
        take(segment, records, &mut picked)?;
    }
    picked.sort_by_key(|(seq, _)| *seq);
    Ok(picked.into_iter().map(|(_, e)| e).collect())
}
