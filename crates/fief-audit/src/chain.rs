//! The chain without files: entries sealed after a given head, a chain
//! followed entry by entry, and anchors against a truncated tail. A log
//! kept in a database (`fief-store`'s `audit.rs`) is built from these, so
//! its entries are byte for byte what the file log would have written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AuditError, Entry, Event, GENESIS};

/// One chained entry: its exact bytes (what the hash covers) and hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub entry: Entry,
    pub body: String,
    pub hash: String,
}

/// Chains `events` after the entry numbered `seq` whose hash is `hash`
/// (`0` and [`GENESIS`] for an empty log), all stamped `ts`.
pub fn chain(
    seq: u64,
    hash: &str,
    ts: &str,
    events: Vec<Event>,
) -> Result<Vec<Sealed>, AuditError> {
    let mut prev = hash.to_owned();
    let mut out = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let entry = Entry {
            seq: seq + 1 + i as u64,
            ts: ts.to_owned(),
            prev: prev.clone(),
            event,
        };
        let (body, hash) = seal(&entry)?;
        prev = hash.clone();
        out.push(Sealed { entry, body, hash });
    }
    Ok(out)
}

/// An entry's exact bytes and their SHA-256.
pub fn seal(entry: &Entry) -> Result<(String, String), AuditError> {
    let body = serde_json::to_string(entry).map_err(|e| AuditError::Broken {
        segment: "(new entry)".into(),
        line: entry.seq,
        reason: e.to_string(),
    })?;
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    Ok((body, hash))
}

/// Follows a chain entry by entry: every body's hash, every link, every
/// sequence number. `place` names where the entries are, for errors.
#[derive(Debug, Clone)]
pub struct Follower {
    place: String,
    next: u64,
    prev: String,
    first: u64,
    entries: u64,
}

impl Follower {
    /// A chain whose first entry is `first` and links to `prev` (1 and
    /// [`GENESIS`] for a whole log).
    pub fn new(place: &str, first: u64, prev: &str) -> Self {
        Self {
            place: place.to_owned(),
            next: first,
            prev: prev.to_owned(),
            first,
            entries: 0,
        }
    }

    /// Checks the next entry.
    pub fn next(&mut self, seq: u64, body: &str, hash: &str) -> Result<Entry, AuditError> {
        let broken = |reason: String| AuditError::Broken {
            segment: self.place.clone(),
            line: seq,
            reason,
        };
        if seq != self.next {
            return Err(broken(format!(
                "entry {seq} where {} was expected (entries were removed)",
                self.next
            )));
        }
        if hex::encode(Sha256::digest(body.as_bytes())) != hash {
            return Err(broken("hash does not match the entry's contents".into()));
        }
        let entry: Entry =
            serde_json::from_str(body).map_err(|e| broken(format!("not a valid entry: {e}")))?;
        if entry.seq != seq {
            return Err(broken(format!("holds sequence number {}", entry.seq)));
        }
        if entry.prev != self.prev {
            return Err(broken(
                "does not link to the previous entry (an entry was removed, reordered or altered)"
                    .into(),
            ));
        }
        self.prev = hash.to_owned();
        self.next += 1;
        self.entries += 1;
        Ok(entry)
    }

    /// The chain so far (`segments` is 1: one table, one chain).
    pub fn verified(&self) -> crate::Verified {
        crate::Verified {
            entries: self.entries,
            first_seq: self.first,
            segments: 1,
            last_hash: if self.entries == 0 {
                GENESIS.to_owned()
            } else {
                self.prev.clone()
            },
        }
    }
}

/// A checkpoint of the head, kept where the log's writer cannot rewrite
/// it: the log had `seq` entries and its last one hashed to `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
    pub at: String,
}

/// Checks a verified log against its newest anchor: the anchored entry
/// must still be there with the anchored hash. `hash_at` is the hash the
/// log now holds at `anchor.seq` (`None` if the log ends before it).
pub fn check_anchor(
    verified: &crate::Verified,
    anchor: &Anchor,
    hash_at: Option<&str>,
) -> Result<(), AuditError> {
    let last = verified.first_seq + verified.entries - 1;
    match hash_at {
        _ if verified.entries == 0 || last < anchor.seq => Err(AuditError::Truncated {
            last: if verified.entries == 0 { 0 } else { last },
            anchor: anchor.clone(),
        }),
        Some(h) if h == anchor.hash => Ok(()),
        _ => Err(AuditError::Broken {
            segment: "anchor".into(),
            line: anchor.seq,
            reason: format!(
                "entry {} no longer has the hash anchored at {} ({}): the log was rewritten",
                anchor.seq, anchor.at, anchor.hash
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, Kind};

    fn event(n: u32) -> Event {
        Event {
            kind: Kind::Authz,
            request_id: format!("r{n}"),
            principal: "key:acme/k".into(),
            tenant: Some("acme".into()),
            incarnation: None,
            action: "Invoke".into(),
            resource: "frn:fief:model:acme/m".into(),
            decision: Decision::Allow,
            policies: vec![],
            reason: None,
            source: None,
            usage: None,
        }
    }

    fn log(n: u32) -> Vec<Sealed> {
        let first = chain(0, GENESIS, "t", (0..2).map(event).collect()).unwrap();
        let last = first.last().unwrap();
        let more = chain(2, &last.hash, "t", (2..n).map(event).collect()).unwrap();
        first.into_iter().chain(more).collect()
    }

    #[test]
    fn a_chain_built_in_batches_follows_and_matches_the_file_encoding() {
        let entries = log(5);
        let mut f = Follower::new("t", 1, GENESIS);
        for s in &entries {
            assert_eq!(f.next(s.entry.seq, &s.body, &s.hash).unwrap(), s.entry);
            // The same bytes the file log hashes.
            let (line, hash) = crate::encode(&s.entry).unwrap();
            assert_eq!(hash, s.hash);
            assert!(String::from_utf8(line).unwrap().contains(&s.body));
        }
        assert_eq!(f.verified().entries, 5);
        assert_eq!(f.verified().last_hash, entries[4].hash);
    }

    #[test]
    fn removal_alteration_and_reordering_are_found() {
        let entries = log(4);
        let follow = |rows: Vec<(u64, String, String)>| {
            let mut f = Follower::new("t", 1, GENESIS);
            rows.iter()
                .try_for_each(|(s, b, h)| f.next(*s, b, h).map(|_| ()))
        };
        let rows: Vec<_> = entries
            .iter()
            .map(|s| (s.entry.seq, s.body.clone(), s.hash.clone()))
            .collect();
        assert!(follow(rows.clone()).is_ok());
        let mut gone = rows.clone();
        gone.remove(1);
        assert!(follow(gone).is_err());
        let mut altered = rows.clone();
        altered[2].1 = altered[2].1.replace("allow", "deny");
        assert!(follow(altered).is_err());
        // Altered and re-hashed: the next link breaks.
        let mut rehashed = rows.clone();
        rehashed[1].1 = rehashed[1].1.replace("r1", "rX");
        rehashed[1].2 = hex::encode(Sha256::digest(rehashed[1].1.as_bytes()));
        assert!(follow(rehashed).is_err());
    }

    #[test]
    fn an_anchor_reports_a_truncated_or_rewritten_tail() {
        let entries = log(6);
        let anchor = Anchor {
            seq: 5,
            hash: entries[4].hash.clone(),
            at: "t".into(),
        };
        let mut whole = Follower::new("t", 1, GENESIS);
        for s in &entries {
            whole.next(s.entry.seq, &s.body, &s.hash).unwrap();
        }
        assert!(check_anchor(&whole.verified(), &anchor, Some(&entries[4].hash)).is_ok());
        // The newest two removed: the rest still verifies, the anchor does not.
        let mut cut = Follower::new("t", 1, GENESIS);
        for s in &entries[..4] {
            cut.next(s.entry.seq, &s.body, &s.hash).unwrap();
        }
        let e = check_anchor(&cut.verified(), &anchor, None).unwrap_err();
        assert!(matches!(e, AuditError::Truncated { last: 4, .. }), "{e}");
        assert!(check_anchor(&whole.verified(), &anchor, Some(&entries[3].hash)).is_err());
        assert!(check_anchor(&Follower::new("t", 1, GENESIS).verified(), &anchor, None).is_err());
    }
}
