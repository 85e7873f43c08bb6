//! Counters in this process: exact for one gateway. Every level of one
//! tenant incarnation sits in one shard, so an admission takes one lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::{decide, held, level_status, Ask, Decision, Held, Level, LevelRead, LevelStatus};
use crate::{Admitted, Outcome, QuotaError, Result, Settings};

#[derive(Debug, Default)]
struct State {
    rpm_tat: Option<f64>,
    tpm_tat: Option<f64>,
    concurrent: u64,
    /// (month, spent, reserved)
    budget: Option<(String, u64, u64)>,
}

pub(crate) struct Memory {
    shards: Vec<Mutex<HashMap<String, State>>>,
    epoch: Instant,
}

const SHARDS: usize = 32;

fn key(scope: &str, level: &str) -> String {
    format!("{scope}\u{0}{level}")
}

impl Memory {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, scope: &str) -> &Mutex<HashMap<String, State>> {
        // FNV-1a: cheap, and stable for the process's life.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in scope.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h % SHARDS as u64) as usize]
    }

    /// Microseconds on a monotonic clock (a wall-clock step changes no rate).
    fn now(&self) -> f64 {
        // Offset so a stored arrival time is never mistaken for "none".
        1e9 + self.epoch.elapsed().as_micros() as f64
    }

    fn read(state: Option<&State>, month: &str) -> LevelRead {
        match state {
            None => LevelRead {
                rpm_tat: None,
                tpm_tat: None,
                concurrent: 0,
                budget: None,
            },
            Some(s) => LevelRead {
                rpm_tat: s.rpm_tat,
                tpm_tat: s.tpm_tat,
                concurrent: s.concurrent,
                budget: s
                    .budget
                    .as_ref()
                    .filter(|(m, _, _)| m == month)
                    .map(|(_, spent, reserved)| (*spent, *reserved)),
            },
        }
    }

    pub(crate) fn admit(&self, ask: &Ask<'_>, s: &Settings) -> Result<Outcome> {
        let now = self.now();
        let mut map = self
            .shard(ask.scope)
            .lock()
            .map_err(|_| QuotaError::Unreachable("a counter lock is poisoned".into()))?;
        let keys: Vec<String> = ask.levels.iter().map(|l| key(ask.scope, &l.key)).collect();
        let reads: Vec<LevelRead> = keys
            .iter()
            .map(|k| Self::read(map.get(k), ask.month))
            .collect();
        Ok(match decide(ask, &reads, now, s) {
            Decision::Seed(levels) => Outcome::NeedsSeed(levels),
            Decision::Refuse(r) => Outcome::Refused(r),
            Decision::Admit {
                tokens,
                rate,
                writes,
            } => {
                for (k, w) in keys.into_iter().zip(&writes) {
                    let st = map.entry(k).or_default();
                    if w.rpm_tat.is_some() {
                        st.rpm_tat = w.rpm_tat;
                    }
                    if w.tpm_tat.is_some() {
                        st.tpm_tat = w.tpm_tat;
                    }
                    if w.concurrent {
                        st.concurrent += 1;
                    }
                    if w.budget {
                        if let Some((_, _, reserved)) = st.budget.as_mut() {
                            *reserved += tokens;
                        }
                    }
                }
                Outcome::Admitted(Admitted {
                    tokens,
                    rate,
                    held: held(ask, tokens, &writes, s),
                })
            }
        })
    }

    pub(crate) fn seed(&self, scope: &str, level: &str, month: &str, spent: u64) {
        if let Ok(mut map) = self.shard(scope).lock() {
            let st = map.entry(key(scope, level)).or_default();
            // A month already held stays (it has this process's reservations).
            if st.budget.as_ref().is_none_or(|(m, _, _)| m != month) {
                st.budget = Some((month.to_owned(), spent, 0));
            }
        }
    }

    pub(crate) fn settle(&self, h: &Held, used: u64) {
        let Ok(mut map) = self.shard(&h.scope).lock() else {
            return;
        };
        for l in &h.levels {
            let Some(st) = map.get_mut(&key(&h.scope, &l.key)) else {
                continue;
            };
            if let (Some(g), Some(tat)) = (l.tpm, st.tpm_tat) {
                st.tpm_tat = Some(g.refund(tat, h.reserved as i64 - used as i64));
            }
            if l.concurrent {
                st.concurrent = st.concurrent.saturating_sub(1);
            }
            if l.budget {
                if let Some((month, spent, reserved)) = st.budget.as_mut() {
                    if *month == h.month {
                        *reserved = reserved.saturating_sub(h.reserved);
                        *spent += used;
                    }
                }
            }
        }
    }

    pub(crate) fn status(
        &self,
        scope: &str,
        levels: &[Level],
        month: &str,
        s: &Settings,
    ) -> Vec<LevelStatus> {
        let now = self.now();
        let Ok(map) = self.shard(scope).lock() else {
            return Vec::new();
        };
        levels
            .iter()
            .map(|l| {
                let r = Self::read(map.get(&key(scope, &l.key)), month);
                level_status(&l.limits, &r, now, s)
            })
            .collect()
    }

    pub(crate) fn forget(&self, scope: &str) {
        let prefix = format!("{scope}\u{0}");
        if let Ok(mut map) = self.shard(scope).lock() {
            map.retain(|k, _| !k.starts_with(&prefix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Quotas};
    use fief_config::LimitKind;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            request_burst_secs: 6,
            token_burst_secs: 60,
            lease: Duration::from_secs(60),
        }
    }

    fn ask<'a>(levels: &'a [Level], tokens: u64, min: u64, lease: &'a str) -> Ask<'a> {
        Ask {
            scope: "acme.1",
            levels,
            tokens,
            min_tokens: min,
            month: "2026-12",
            lease,
        }
    }

    #[tokio::test]
    async fn a_budget_admits_only_what_it_can_pay_for_however_many_ask_at_once() {
        let q = std::sync::Arc::new(Quotas::memory(settings()));
        let levels = vec![Level {
            key: "tenant".into(),
            limits: Limits {
                monthly_token_budget: Some(1000),
                ..Limits::default()
            },
        }];
        match q.admit(&ask(&levels, 100, 100, "x")).await.unwrap() {
            Outcome::NeedsSeed(l) => assert_eq!(l, vec!["tenant".to_owned()]),
            other => unreachable!("{other:?}"),
        }
        q.seed("acme.1", "tenant", "2026-12", 0).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (q, levels) = (q.clone(), levels.clone());
            tasks.push(tokio::spawn(async move {
                let lease = format!("l{i}");
                match q.admit(&ask(&levels, 100, 100, &lease)).await.unwrap() {
                    Outcome::Admitted(a) => {
                        q.settle(&a.held, 100).await.unwrap();
                        1
                    }
                    Outcome::Refused(r) => {
                        assert_eq!(r.kind, LimitKind::MonthlyTokenBudget);
                        0
                    }
                    other => unreachable!("{other:?}"),
                }
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert_eq!(admitted, 10);
        let st = q.status("acme.1", &levels, "2026-12").await.unwrap();
        assert_eq!(st[0].budget, Some((1000, 0)));
    }

    #[tokio::test]
    async fn every_level_must_pass_and_a_refusal_takes_nothing() {
        let q = Quotas::memory(settings());
        let levels = vec![
            Level {
                key: "tenant".into(),
                limits: Limits {
                    requests_per_minute: Some(600),
                    ..Limits::default()
                },
            },
            Level {
                key: "api-key:k".into(),
                limits: Limits {
                    concurrent_requests: Some(2),
                    ..Limits::default()
                },
            },
        ];
        let a = q.admit(&ask(&levels, 0, 0, "a")).await.unwrap();
        let b = q.admit(&ask(&levels, 0, 0, "b")).await.unwrap();
        let Outcome::Refused(r) = q.admit(&ask(&levels, 0, 0, "c")).await.unwrap() else {
            unreachable!()
        };
        assert_eq!((r.kind, r.level), (LimitKind::ConcurrentRequests, 1));
        // The refused one took no request from the tenant's rate.
        let st = q.status("acme.1", &levels, "2026-12").await.unwrap();
        assert_eq!(st[0].requests.unwrap().remaining, 58);
        let (Outcome::Admitted(a), Outcome::Admitted(_)) = (a, b) else {
            unreachable!()
        };
        q.settle(&a.held, 0).await.unwrap();
        assert!(matches!(
            q.admit(&ask(&levels, 0, 0, "d")).await.unwrap(),
            Outcome::Admitted(_)
        ));
    }

    #[tokio::test]
    async fn a_stream_gets_what_the_budget_has_left_and_unused_tokens_come_back() {
        let q = Quotas::memory(settings());
        let levels = vec![Level {
            key: "tenant".into(),
            limits: Limits {
                monthly_token_budget: Some(250),
                tokens_per_minute: Some(100_000),
                ..Limits::default()
            },
        }];
        q.seed("acme.1", "tenant", "2026-12", 100).await.unwrap();
        // Non-streamed: needs the whole 200.
        assert!(matches!(
            q.admit(&ask(&levels, 200, 200, "a")).await.unwrap(),
            Outcome::Refused(_)
        ));
        let Outcome::Admitted(a) = q.admit(&ask(&levels, 200, 10, "b")).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(a.tokens, 150);
        let before = a.rate.tokens.unwrap().remaining;
        q.settle(&a.held, 40).await.unwrap();
        let st = q.status("acme.1", &levels, "2026-12").await.unwrap();
        assert_eq!(st[0].budget, Some((140, 0)));
        assert_eq!(st[0].tokens.unwrap().remaining, before + 110);
    }
}
