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
        tenant: Some(format!("t{}", i % 3)),
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
        usage: None,
    }
}

/// Small segments, so a few hundred entries span several.
fn small() -> Options {
    Options {
        segment_bytes: 4096,
        ..Options::default()
    }
}

async fn write_log(n: usize, options: Options) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options).unwrap();
    for i in 0..n {
        assert_eq!(log.append(event(i)).await.unwrap(), i as u64 + 1);
    }
    dir
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(DIR).join(format!("segment-{n:06}.log"))
}

#[tokio::test]
async fn untouched_log_verifies_and_reopens_at_its_tail() {
    let d = write_log(5, Options::default()).await;
    assert_eq!(verify_dir(d.path()).unwrap().entries, 5);
    let log = AuditLog::open(d.path(), Options::default()).unwrap();
    assert_eq!(log.opened().verified_entries, 5);
    assert_eq!(log.append(event(9)).await.unwrap(), 6);
    assert_eq!(verify_dir(d.path()).unwrap().entries, 6);
    let denies = log
        .query(&Query {
            decision: Some(Decision::Deny),
            limit: 10,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        denies.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 4, 6]
    );
}

/// Every single-byte change anywhere in a segment is detected, and the
/// error names the line that holds the changed byte (or the one after it,
/// when the change removed a newline).
#[tokio::test]
async fn every_single_byte_change_is_detected_and_located() {
    let d = write_log(4, Options::default()).await;
    let path = segment(d.path(), 1);
    let original = std::fs::read(&path).unwrap();
    for pos in 0..original.len() {
        for replacement in [b'x', b'0', b' '] {
            if original[pos] == replacement {
                continue;
            }
            let mut bytes = original.clone();
            bytes[pos] = replacement;
            std::fs::write(&path, &bytes).unwrap();
            let line_of_pos = original[..pos].iter().filter(|b| **b == b'\n').count() as u64 + 1;
            match verify_dir(d.path()) {
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

#[tokio::test]
async fn removed_or_reordered_entries_are_detected() {
    let d = write_log(4, Options::default()).await;
    let path = segment(d.path(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
    assert!(matches!(
        verify_dir(d.path()),
        Err(AuditError::Broken { line: 2, .. })
    ));
    std::fs::write(&path, format!("{}\n{}\n", lines[1], lines[0])).unwrap();
    assert!(matches!(
        verify_dir(d.path()),
        Err(AuditError::Broken { line: 1, .. })
    ));
    // A tampered log is refused at start-up instead of being extended.
    assert!(AuditLog::open(d.path(), Options::default()).is_err());
}

#[tokio::test]
async fn segments_chain_into_one_log_and_a_missing_or_swapped_one_is_named() {
    let d = write_log(300, small()).await;
    let v = verify_dir(d.path()).unwrap();
    assert_eq!(v.entries, 300);
    assert!(v.segments >= 5, "{} segments", v.segments);
    // Start-up verifies only the open segment.
    let log = AuditLog::open(d.path(), small()).unwrap();
    assert!(
        log.opened().verified_entries < 30,
        "{}",
        log.opened().verified_entries
    );
    drop(log);

    let (two, three) = (segment(d.path(), 2), segment(d.path(), 3));
    let (b2, b3) = (std::fs::read(&two).unwrap(), std::fs::read(&three).unwrap());
    std::fs::remove_file(&three).unwrap();
    let e = verify_dir(d.path()).unwrap_err().to_string();
    assert!(e.contains("segment 3 is missing"), "{e}");
    assert!(AuditLog::open(d.path(), small()).is_err());
    // Swapped contents: the chain breaks at the first line of segment 2.
    std::fs::write(&two, &b3).unwrap();
    std::fs::write(&three, &b2).unwrap();
    let e = verify_dir(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("segment-000002") && e.contains("missing or reordered"),
        "{e}"
    );
    std::fs::write(&two, &b2).unwrap();
    std::fs::write(&three, &b3).unwrap();
    assert_eq!(verify_dir(d.path()).unwrap().entries, 300);
    // A closed segment changed after its checkpoint is refused at start-up
    // without reading it (its size no longer matches).
    let mut grown = b2.clone();
    grown.extend_from_slice(b"x");
    std::fs::write(&two, &grown).unwrap();
    let e = AuditLog::open(d.path(), small()).err().unwrap().to_string();
    assert!(e.contains("segment 2 is not as it was closed"), "{e}");
}

#[tokio::test]
async fn an_unfinished_last_line_is_cut_at_start_up() {
    let d = write_log(5, Options::default()).await;
    let path = segment(d.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"entry\":{\"seq\":6,\"ts\":\"2026");
    std::fs::write(&path, &bytes).unwrap();
    // Strict verification names it; opening repairs it.
    assert!(verify_dir(d.path()).is_err());
    let log = AuditLog::open(d.path(), Options::default()).unwrap();
    assert_eq!(log.opened().torn_tail_bytes, 28);
    assert_eq!(log.append(event(6)).await.unwrap(), 6);
    assert_eq!(verify_dir(d.path()).unwrap().entries, 6);
}

#[tokio::test]
async fn the_first_layout_moves_in_and_keeps_its_chain() {
    let d = write_log(7, Options::default()).await;
    // Make it the first layout: one file in the data directory.
    let legacy = d.path().join(LEGACY_FILE);
    std::fs::rename(segment(d.path(), 1), &legacy).unwrap();
    std::fs::remove_dir_all(d.path().join(DIR)).unwrap();
    assert_eq!(verify_dir(d.path()).unwrap().entries, 7);
    let log = AuditLog::open(d.path(), Options::default()).unwrap();
    assert!(log.opened().migrated_legacy);
    assert!(!legacy.exists());
    assert_eq!(log.append(event(7)).await.unwrap(), 8);
    let v = verify_dir(d.path()).unwrap();
    assert_eq!((v.entries, v.segments), (8, 2));
}

#[tokio::test]
async fn retention_removes_whole_old_segments_and_the_rest_still_verifies() {
    let d = write_log(300, small()).await;
    let before = verify_dir(d.path()).unwrap();
    let keep = Options {
        retention_days: Some(0),
        ..small()
    };
    // Every closed segment is older than "0 days" except the newest closed.
    let log = AuditLog::open(d.path(), keep).unwrap();
    let after = verify_dir(d.path()).unwrap();
    assert!(after.first_seq > 1 && after.segments == 2, "{after:?}");
    assert_eq!(after.last_hash, before.last_hash);
    assert_eq!(after.entries + after.first_seq - 1, 300);
    assert!(!segment(d.path(), 1).exists());
    let marks = std::fs::read_to_string(d.path().join(DIR).join("checkpoints.jsonl")).unwrap();
    assert!(marks.contains("\"kind\":\"retired\""), "{marks}");
    assert_eq!(log.append(event(300)).await.unwrap(), 301);
    drop(log);
    assert!(AuditLog::open(d.path(), keep).is_ok());
}

/// The index finds exactly what a full scan finds, for every filter.
#[tokio::test]
async fn queries_by_tenant_decision_kind_and_time_match_a_full_scan() {
    let d = write_log(400, small()).await;
    let log = AuditLog::open(d.path(), small()).unwrap();
    // Some entries in the open segment too.
    for i in 400..420 {
        log.append(event(i)).await.unwrap();
    }
    let all = log
        .query(&Query {
            limit: 10_000,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(all.len(), 420);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let mid_ts = index::ts_ms(&all[200].ts);
    for tenant in [None, Some("t0"), Some("t2"), Some("nobody")] {
        for decision in [None, Some(Decision::Deny), Some(Decision::Allow)] {
            for kind in [None, Some(Kind::Admin)] {
                for (since, limit) in [(None, 7), (Some(mid_ts), 10_000), (None, 10_000)] {
                    let q = Query {
                        tenant: tenant.map(str::to_owned),
                        decision,
                        since_ms: since,
                        until_ms: None,
                        limit,
                        kind,
                    };
                    let want: Vec<u64> = all
                        .iter()
                        .filter(|e| {
                            tenant.is_none_or(|t| e.event.tenant.as_deref() == Some(t))
                                && decision.is_none_or(|d| e.event.decision == d)
                                && kind.is_none_or(|k| e.event.kind == k)
                                && since.is_none_or(|s| index::ts_ms(&e.ts) >= s)
                        })
                        .map(|e| e.seq)
                        .collect();
                    let want = &want[want.len().saturating_sub(limit)..];
                    let got: Vec<u64> = log.query(&q).unwrap().iter().map(|e| e.seq).collect();
                    assert_eq!(got, want, "{q:?}");
                }
            }
        }
    }
}

/// Many concurrent appends share writes, every caller gets its own
/// sequence number, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed_into_one_chain() {
    for fsync in [Fsync::Always, Fsync::Batch, Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::open(dir.path(), Options { fsync, ..small() }).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..50 {
                        seqs.push(log.append(event(t * 50 + i)).await.unwrap());
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.extend(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<_>>(), "{fsync:?}");
        log.flush().unwrap();
        assert_eq!(verify_dir(dir.path()).unwrap().entries, 800, "{fsync:?}");
    }
}

#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_failed_append_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    faults::fail_appends_under(Some(dir.path()));
    let r = log.append(event(0)).await;
    faults::fail_appends_under(None);
    assert!(r.is_err());
    assert_eq!(log.append(event(1)).await.unwrap(), 1);
}

/// Thousands of entries per segment, and logs reopened between writes: the
/// index still finds a tenant's newest entries.
#[tokio::test]
async fn tenant_queries_hold_across_large_segments_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes: 1 << 20,
        ..Options::default()
    };
    let log = AuditLog::open(dir.path(), opts).unwrap();
    for i in 0..30_000usize {
        let mut e = event(i);
        e.tenant = Some(format!("s{:05}", i % 300));
        log.append(e).await.unwrap();
    }
    drop(log);
    let log = AuditLog::open(dir.path(), opts).unwrap();
    for i in 30_000..40_000usize {
        let mut e = event(i);
        e.tenant = Some(format!("s{:05}", i % 300));
        log.append(e).await.unwrap();
    }
    drop(log);
    let log = AuditLog::open(dir.path(), opts).unwrap();
    for t in [0u64, 7, 299] {
        let got = log
            .query(&Query {
                tenant: Some(format!("s{t:05}")),
                limit: 100,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(got.len(), 100, "tenant {t}");
        assert!(got
            .iter()
            .all(|e| e.event.tenant.as_deref() == Some(format!("s{t:05}").as_str())));
        // The newest ones: the last is the tenant's last entry.
        let newest = (0..40_000u64).rev().find(|i| i % 300 == t).unwrap() + 1;
        assert_eq!(got.last().unwrap().seq, newest);
    }
}
