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

// Tested with the Redis store on the same scenarios: `tests/counters.rs`.
