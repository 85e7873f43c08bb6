//! The same admission scenarios on both counter stores: in this process,
//! and in Redis (`FIEF_TEST_REDIS_URL`; skipped without it, except under
//! `CI=true`). Each run uses scopes of its own, so runs do not meet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fief_config::{LimitKind, Limits, RedisConfig};
use fief_quota::{Ask, Level, Outcome, Quotas, Settings};

fn settings() -> Settings {
    Settings {
        request_burst_secs: 6,
        token_burst_secs: 60,
        lease: Duration::from_secs(30),
    }
}

fn stores() -> Vec<(&'static str, Arc<Quotas>)> {
    let mut out = vec![("memory", Arc::new(Quotas::memory(settings())))];
    match std::env::var("FIEF_TEST_REDIS_URL") {
        Ok(url) => {
            let config = RedisConfig {
                url,
                timeout_ms: 2000,
                connections: 8,
            };
            out.push((
                "redis",
                Arc::new(Quotas::redis(&config, settings()).unwrap()),
            ));
        }
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "FIEF_TEST_REDIS_URL is not set (CI needs the Redis tests)"
            );
            eprintln!("SKIP (redis): FIEF_TEST_REDIS_URL is not set");
        }
    }
    out
}

fn scope() -> String {
    format!("t{:016x}.i", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn tenant(limits: Limits) -> Vec<Level> {
    vec![Level {
        key: "tenant".into(),
        limits,
    }]
}

async fn admit(
    q: &Quotas,
    scope: &str,
    levels: &[Level],
    tokens: u64,
    min: u64,
    lease: &str,
) -> Outcome {
    q.admit(&Ask {
        scope,
        levels,
        tokens,
        min_tokens: min,
        month: "2026-12",
        lease,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_at_once_on_a_budget_for_ten_admit_ten_twenty_times_over() {
    for (name, q) in stores() {
        for round in 0..20 {
            let scope = Arc::new(scope());
            let levels = Arc::new(tenant(Limits {
                monthly_token_budget: Some(1000),
                ..Limits::default()
            }));
            assert!(matches!(
                admit(&q, &scope, &levels, 100, 100, "probe").await,
                Outcome::NeedsSeed(_)
            ));
            q.seed(&scope, "tenant", "2026-12", 0).await.unwrap();
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let (q, scope, levels) = (q.clone(), scope.clone(), levels.clone());
                    tokio::spawn(async move {
                        let lease = format!("l{i}");
                        matches!(
                            admit(&q, &scope, &levels, 100, 100, &lease).await,
                            Outcome::Admitted(_)
                        )
                    })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                admitted += u32::from(t.await.unwrap());
            }
            assert_eq!(admitted, 10, "{name} round {round}");
            let st = q.status(&scope, &levels, "2026-12").await.unwrap();
            assert_eq!(st[0].budget, Some((0, 1000)), "{name}");
        }
    }
}

#[tokio::test]
async fn rates_burst_then_refuse_and_every_level_must_pass() {
    for (name, q) in stores() {
        let scope = scope();
        let levels = vec![
            Level {
                key: "tenant".into(),
                limits: Limits {
                    requests_per_minute: Some(600),
                    ..Limits::default()
                },
            },
            Level {
                key: "role:r".into(),
                limits: Limits {
                    concurrent_requests: Some(100),
                    ..Limits::default()
                },
            },
        ];
        let mut admitted = 0;
        let mut refused = None;
        for i in 0..80 {
            match admit(&q, &scope, &levels, 0, 0, &format!("l{i}")).await {
                Outcome::Admitted(a) => {
                    admitted += 1;
                    assert!(a.rate.requests.is_some());
                }
                Outcome::Refused(r) => {
                    refused.get_or_insert(r);
                }
                other => panic!("{other:?}"),
            }
        }
        // A burst of 6 s at 10 per second, then (within the loop's few
        // milliseconds) at most one more.
        assert!((60..=61).contains(&admitted), "{name}: {admitted}");
        let r = refused.unwrap();
        assert_eq!(
            (r.kind, r.level),
            (LimitKind::RequestsPerMinute, 0),
            "{name}"
        );
        assert!(
            r.wait.unwrap() <= Duration::from_millis(101),
            "{name}: {:?}",
            r.wait
        );
        // The refused ones took no concurrency lease at the role level.
        let st = q.status(&scope, &levels, "2026-12").await.unwrap();
        assert_eq!(st[1].concurrent_in_use, admitted, "{name}");
    }
}

#[tokio::test]
async fn settling_frees_leases_refunds_tokens_and_charges_the_budget() {
    for (name, q) in stores() {
        let scope = scope();
        let levels = tenant(Limits {
            tokens_per_minute: Some(6000),
            concurrent_requests: Some(1),
            monthly_token_budget: Some(500),
            ..Limits::default()
        });
        q.seed(&scope, "tenant", "2026-12", 100).await.unwrap();
        let Outcome::Admitted(a) = admit(&q, &scope, &levels, 300, 300, "a").await else {
            panic!("{name}")
        };
        assert_eq!(a.rate.tokens.unwrap().remaining, 5700, "{name}");
        // One at a time.
        let Outcome::Refused(r) = admit(&q, &scope, &levels, 10, 10, "b").await else {
            panic!("{name}")
        };
        assert_eq!(r.kind, LimitKind::ConcurrentRequests, "{name}");
        q.settle(&a.held, 120).await.unwrap();
        let st = q.status(&scope, &levels, "2026-12").await.unwrap();
        assert_eq!(st[0].budget, Some((220, 0)), "{name}");
        assert_eq!(st[0].concurrent_in_use, 0, "{name}");
        assert!(
            st[0].tokens.unwrap().remaining >= 5880,
            "{name}: {:?}",
            st[0].tokens
        );
        // A stream may start with what is left (280), not a whole 300.
        let Outcome::Admitted(b) = admit(&q, &scope, &levels, 300, 20, "c").await else {
            panic!("{name}")
        };
        assert_eq!(b.tokens, 280, "{name}");
        q.settle(&b.held, 280).await.unwrap();
        let Outcome::Refused(r) = admit(&q, &scope, &levels, 300, 20, "d").await else {
            panic!("{name}")
        };
        assert_eq!(r.kind, LimitKind::MonthlyTokenBudget, "{name}");
        assert!(r.wait.is_none() && !r.too_large, "{name}");
        // A reservation larger than the token burst never fits.
        let Outcome::Refused(r) = admit(
            &q,
            &scope,
            &tenant(Limits {
                tokens_per_minute: Some(60),
                ..Limits::default()
            }),
            100,
            100,
            "e",
        )
        .await
        else {
            panic!("{name}")
        };
        assert!(r.too_large, "{name}");
    }
}

#[tokio::test]
async fn an_admission_is_one_round_trip_and_a_redis_that_forgot_its_scripts_is_reloaded() {
    for (name, q) in stores() {
        if name != "redis" {
            continue;
        }
        let scope = scope();
        let levels = tenant(Limits {
            requests_per_minute: Some(100_000),
            ..Limits::default()
        });
        admit(&q, &scope, &levels, 0, 0, "warm").await;
        let (_, before) = q.counts();
        for i in 0..100 {
            admit(&q, &scope, &levels, 0, 0, &format!("l{i}")).await;
        }
        let (_, after) = q.counts();
        assert_eq!(after - before, 100, "one round trip per admission");
        // SCRIPT FLUSH, as after a Redis restart: the next admission loads it again.
        let url = std::env::var("FIEF_TEST_REDIS_URL").unwrap();
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n")
            .unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+OK\r\n");
        assert!(matches!(
            admit(&q, &scope, &levels, 0, 0, "again").await,
            Outcome::Admitted(_)
        ));
    }
}
