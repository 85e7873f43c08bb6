//! Which deployment carries a request: least outstanding requests among the
//! healthy ones; a deployment that keeps failing rests and is probed back by
//! one request. The choice is synchronous; time is passed in.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fief_config::Scheduling;
use fief_quota::fair::FairGate;

use crate::catalog::{Deployment, UpstreamId};

/// Live state of one upstream.
#[derive(Debug)]
pub struct UpstreamState {
    /// Requests sent and not yet finished.
    outstanding: AtomicUsize,
    /// `max_concurrency` slots, handed out fairly across tenants.
    pub slots: FairGate,
    health: Mutex<Health>,
    failures_in_a_row: AtomicU32,
}

#[derive(Debug, Default)]
struct Health {
    /// Resting until then; after it, one probe at a time.
    resting_until: Option<Instant>,
    probing: bool,
}

/// What [`Router::pick`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// Send to `candidates[index]`; `probe` if it comes back from a rest.
    Send { index: usize, probe: bool },
    /// Every candidate not yet tried is resting.
    AllResting,
    /// Every candidate was tried.
    Exhausted,
}

#[derive(Debug)]
pub struct Router {
    upstreams: Vec<Arc<UpstreamState>>,
    cooldown_after: u32,
    cooldown: Duration,
    /// Breaks ties between equally loaded deployments in turn.
    turn: AtomicUsize,
}

/// Counts a request as outstanding on its upstream until dropped.
#[derive(Debug)]
pub struct Outstanding(Arc<UpstreamState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Router {
    /// `limits`: each upstream's `max_concurrency` and how its slots are
    /// handed out, in config order.
    pub fn new(limits: &[(usize, Scheduling)], cooldown_after: u32, cooldown: Duration) -> Self {
        Self {
            upstreams: limits
                .iter()
                .map(|(n, mode)| {
                    Arc::new(UpstreamState {
                        outstanding: AtomicUsize::new(0),
                        slots: FairGate::new(*n, *mode),
                        health: Mutex::new(Health::default()),
                        failures_in_a_row: AtomicU32::new(0),
                    })
                })
                .collect(),
            cooldown_after,
            cooldown,
            turn: AtomicUsize::new(0),
        }
    }

    pub fn state(&self, u: UpstreamId) -> &UpstreamState {
        &self.upstreams[u.0]
    }

    pub fn outstanding(&self, u: UpstreamId) -> usize {
        self.upstreams[u.0].outstanding.load(Ordering::Relaxed)
    }

    /// Marks a request outstanding on `u` (picking counts it at once, so
    /// concurrent picks spread).
    pub fn begin(&self, u: UpstreamId) -> Outstanding {
        let state = &self.upstreams[u.0];
        state.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(state.clone())
    }

    /// Chooses among `candidates` those not in `tried` (indexes into
    /// `candidates`): a healthy one with the fewest outstanding requests, or
    /// a rested one as a probe when no healthy one is left.
    pub fn pick(&self, candidates: &[&Deployment], tried: &[usize], now: Instant) -> Pick {
        let open: Vec<usize> = (0..candidates.len())
            .filter(|i| !tried.contains(i))
            .collect();
        if open.is_empty() {
            return Pick::Exhausted;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % open.len();
        let mut best: Option<(usize, usize, usize)> = None; // (load, rank, index)
        let mut probe = None;
        for (n, &i) in open.iter().enumerate() {
            let state = &self.upstreams[candidates[i].upstream.0];
            let resting = match state.health.lock() {
                Ok(h) => match h.resting_until {
                    Some(until) if now < until => Some(false),
                    Some(_) => Some(!h.probing),
                    None => None,
                },
                Err(_) => Some(false),
            };
            match resting {
                Some(probe_ok) => {
                    if probe_ok && probe.is_none() {
                        probe = Some(i);
                    }
                }
                None => {
                    let load = state.outstanding.load(Ordering::Relaxed);
                    let rank = (n + open.len() - turn) % open.len();
                    if best.is_none_or(|(l, r, _)| (load, rank) < (l, r)) {
                        best = Some((load, rank, i));
                    }
                }
            }
        }
        match (best, probe) {
            (Some((_, _, index)), _) => Pick::Send {
                index,
                probe: false,
            },
            (None, Some(index)) => {
                let state = &self.upstreams[candidates[index].upstream.0];
                if let Ok(mut h) = state.health.lock() {
                    h.probing = true;
                }
                Pick::Send { index, probe: true }
            }
            (None, None) => Pick::AllResting,
        }
    }

    /// A request to `u` succeeded: it is healthy again.
    pub fn succeeded(&self, u: UpstreamId) {
        let state = &self.upstreams[u.0];
        state.failures_in_a_row.store(0, Ordering::Relaxed);
        if let Ok(mut h) = state.health.lock() {
            h.resting_until = None;
            h.probing = false;
        }
    }

    /// A request to `u` failed (connect error, 5xx, 429, timeout). Returns
    /// whether it now rests.
    pub fn failed(&self, u: UpstreamId, now: Instant) -> bool {
        let state = &self.upstreams[u.0];
        let n = state.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut h) = state.health.lock() else {
            return false;
        };
        // A failed probe rests again at once.
        if n >= self.cooldown_after || h.probing {
            h.resting_until = Some(now + self.cooldown);
            h.probing = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments(n: usize) -> Vec<Deployment> {
        (0..n)
            .map(|u| Deployment {
                upstream: UpstreamId(u),
                upstream_model: "m".into(),
            })
            .collect()
    }

    #[test]
    fn least_outstanding_wins_and_ties_take_turns() {
        let r = Router::new(&[(4, Scheduling::Fair); 3], 3, Duration::from_secs(30));
        let d = deployments(3);
        let c: Vec<&Deployment> = d.iter().collect();
        let now = Instant::now();
        let _a = r.begin(UpstreamId(0));
        let _b = r.begin(UpstreamId(1));
        assert_eq!(
            r.pick(&c, &[], now),
            Pick::Send {
                index: 2,
                probe: false
            }
        );
        drop(_a);
        drop(_b);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            if let Pick::Send { index, .. } = r.pick(&c, &[], now) {
                seen.insert(index);
            }
        }
        assert_eq!(seen.len(), 3, "ties spread over every deployment");
        assert_eq!(r.pick(&c, &[0, 1, 2], now), Pick::Exhausted);
        assert_eq!(
            r.pick(&c, &[0, 2], now),
            Pick::Send {
                index: 1,
                probe: false
            }
        );
    }

    #[test]
    fn a_failing_deployment_rests_and_one_probe_brings_it_back() {
        let r = Router::new(&[(4, Scheduling::Fair); 2], 2, Duration::from_secs(10));
        let d = deployments(2);
        let c: Vec<&Deployment> = d.iter().collect();
        let t0 = Instant::now();
        assert!(!r.failed(UpstreamId(0), t0));
        assert!(r.failed(UpstreamId(0), t0));
        for _ in 0..4 {
            assert_eq!(
                r.pick(&c, &[], t0),
                Pick::Send {
                    index: 1,
                    probe: false
                }
            );
        }
        assert_eq!(r.pick(&c, &[1], t0), Pick::AllResting);
        let later = t0 + Duration::from_secs(11);
        // Healthy ones first; the rested one only as a probe, one at a time.
        assert_eq!(
            r.pick(&c, &[], later),
            Pick::Send {
                index: 1,
                probe: false
            }
        );
        assert_eq!(
            r.pick(&c, &[1], later),
            Pick::Send {
                index: 0,
                probe: true
            }
        );
        assert_eq!(r.pick(&c, &[1], later), Pick::AllResting);
        // A failed probe rests again; a good one ends the rest.
        assert!(r.failed(UpstreamId(0), later));
        assert_eq!(r.pick(&c, &[1], later), Pick::AllResting);
        let much_later = later + Duration::from_secs(11);
        assert_eq!(
            r.pick(&c, &[1], much_later),
            Pick::Send {
                index: 0,
                probe: true
            }
        );
        r.succeeded(UpstreamId(0));
        assert_eq!(
            r.pick(&c, &[1], much_later),
            Pick::Send {
                index: 0,
                probe: false
            }
        );
    }
}
