//! Admission that cannot overshoot (DESIGN.md, invariant 10). A request
//! names the levels it must pass (tenant, then role, then key or user),
//! each with its limits; admission checks every limit of every level and
//! takes from all of them at once, or from none:
//!
//! - rates (requests and tokens per minute) by GCRA (`gcra.rs`);
//! - concurrency by a count of leases;
//! - the monthly budget by reservation: the call's worst case is reserved
//!   before it is sent and settled with its real usage afterwards, so
//!   concurrent first requests cannot spend past the cap.
//!
//! The counters live in this process (`memory.rs`) or in Redis
//! (`redis.rs`, one script call per admission, on Redis's own clock), so
//! every replica shares one count. Budget spend is also persisted by the
//! caller (a restart or a Redis flush does not reset a month): a level
//! whose spend the counters do not hold yet answers [`Outcome::NeedsSeed`].
//! `fair.rs` hands out shared compute by weighted fair queueing.

pub mod fair;
pub mod gcra;
mod memory;
pub mod month;
mod redis;
mod resp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use fief_config::{LimitKind, Limits};
use gcra::Gcra;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("the quota counters cannot be reached: {0}")]
    Unreachable(String),
    #[error("quota counters: {0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, QuotaError>;

/// Admission settings (from `[quotas]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub request_burst_secs: u64,
    pub token_burst_secs: u64,
    /// A lease (concurrency slot, budget reservation) of a replica that
    /// died is freed after this long (shared counters only).
    pub lease: Duration,
}

impl Settings {
    fn rpm(&self, l: &Limits) -> Option<Gcra> {
        l.requests_per_minute
            .map(|n| Gcra::per_minute(n, self.request_burst_secs))
    }
    fn tpm(&self, l: &Limits) -> Option<Gcra> {
        l.tokens_per_minute
            .map(|n| Gcra::per_minute(n, self.token_burst_secs))
    }
}

/// One level a request must pass: `key` names it within its tenant
/// (`tenant`, `role:NAME`, `api-key:ID`, `user:SUBJECT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub key: String,
    pub limits: Limits,
}

/// What a request asks of its levels.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The tenant incarnation every level belongs to.
    pub scope: &'a str,
    pub levels: &'a [Level],
    /// Tokens to reserve (worst case); 0 for a request that spends none,
    /// which token limits then do not concern.
    pub tokens: u64,
    /// The least budget reservation accepted: a stream may start with what
    /// the budget has left and is cut at it; anything else needs `tokens`.
    pub min_tokens: u64,
    /// The calendar month (`YYYY-MM`) the budget is counted in.
    pub month: &'a str,
    /// Unique per request: names its leases.
    pub lease: &'a str,
}

/// The tightest level's state of one kind, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Until the counter is back to full.
    pub reset: Duration,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateInfo {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl RateInfo {
    fn keep(slot: &mut Option<Window>, w: Window) {
        if slot.is_none_or(|s| w.remaining < s.remaining) {
            *slot = Some(w);
        }
    }
}

/// What an admitted request holds until it is settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    scope: String,
    month: String,
    lease: String,
    /// Tokens reserved (in the token rates and the budget).
    reserved: u64,
    levels: Vec<HeldLevel>,
}

#[derive(Debug, Clone, PartialEq)]
struct HeldLevel {
    key: String,
    tpm: Option<Gcra>,
    concurrent: bool,
    budget: bool,
}

impl Held {
    pub fn reserved(&self) -> u64 {
        self.reserved
    }
    pub fn month(&self) -> &str {
        &self.month
    }
    /// The levels whose budget the usage is charged to (for persisting).
    pub fn budget_levels(&self) -> impl Iterator<Item = &str> {
        self.levels
            .iter()
            .filter(|l| l.budget)
            .map(|l| l.key.as_str())
    }
    pub fn holds_anything(&self) -> bool {
        self.levels
            .iter()
            .any(|l| l.tpm.is_some() || l.concurrent || l.budget)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// Tokens granted: `Ask::tokens`, or less for a stream the budget cuts.
    pub tokens: u64,
    pub rate: RateInfo,
    pub held: Held,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: LimitKind,
    /// Index into `Ask::levels`.
    pub level: usize,
    pub limit: u64,
    /// When it would be admitted; `None` for a budget (next month) or a
    /// request too large to ever fit (`too_large`).
    pub wait: Option<Duration>,
    pub too_large: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Admitted(Admitted),
    Refused(Refusal),
    /// These levels' budget spend this month must be seeded from the store
    /// first ([`Quotas::seed`]), then admission asked again.
    NeedsSeed(Vec<String>),
}

/// One level's state as `GET /api/v1/quotas` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelStatus {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
    pub concurrent_in_use: u64,
    /// Spent and reserved this month; `None` when the counters do not hold
    /// it (the store does).
    pub budget: Option<(u64, u64)>,
}

enum Counters {
    Memory(memory::Memory),
    Redis(Box<redis::Redis>),
}

pub struct Quotas {
    counters: Counters,
    settings: Settings,
    admissions: AtomicU64,
}

impl Quotas {
    /// Counters in this process.
    pub fn memory(settings: Settings) -> Self {
        Self {
            counters: Counters::Memory(memory::Memory::new()),
            settings,
            admissions: AtomicU64::new(0),
        }
    }

    /// Counters in Redis, shared by every replica. Connects lazily: a Redis
    /// that is down at start-up is the same as one that goes down later.
    pub fn redis(config: &fief_config::RedisConfig, settings: Settings) -> Result<Self> {
        Ok(Self {
            counters: Counters::Redis(Box::new(redis::Redis::new(config)?)),
            settings,
            admissions: AtomicU64::new(0),
        })
    }

    /// Readiness: the shared counters answer (always, in memory).
    pub async fn ping(&self) -> Result<()> {
        match &self.counters {
            Counters::Memory(_) => Ok(()),
            Counters::Redis(r) => r.ping().await,
        }
    }

    pub fn shared(&self) -> bool {
        matches!(self.counters, Counters::Redis(_))
    }

    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Outcome> {
        self.admissions.fetch_add(1, Ordering::Relaxed);
        match &self.counters {
            Counters::Memory(m) => m.admit(ask, &self.settings),
            Counters::Redis(r) => r.admit(ask, &self.settings).await,
        }
    }

    /// Sets a level's spend this month unless the counters hold one.
    pub async fn seed(&self, scope: &str, key: &str, month: &str, spent: u64) -> Result<()> {
        match &self.counters {
            Counters::Memory(m) => {
                m.seed(scope, key, month, spent);
                Ok(())
            }
            Counters::Redis(r) => r.seed(scope, key, month, spent).await,
        }
    }

    /// Releases what `held` holds and charges `used` tokens.
    pub async fn settle(&self, held: &Held, used: u64) -> Result<()> {
        match &self.counters {
            Counters::Memory(m) => {
                m.settle(held, used);
                Ok(())
            }
            Counters::Redis(r) => r.settle(held, used).await,
        }
    }

    pub async fn status(
        &self,
        scope: &str,
        levels: &[Level],
        month: &str,
    ) -> Result<Vec<LevelStatus>> {
        match &self.counters {
            Counters::Memory(m) => Ok(m.status(scope, levels, month, &self.settings)),
            Counters::Redis(r) => r.status(scope, levels, month, &self.settings).await,
        }
    }

    /// Drops an offboarded tenant incarnation's counters (this process's;
    /// shared ones expire).
    pub fn forget(&self, scope: &str) {
        if let Counters::Memory(m) = &self.counters {
            m.forget(scope);
        }
    }

    /// Admission calls made, and Redis round trips (0 in memory), for the
    /// benchmark's "one round trip per admission".
    pub fn counts(&self) -> (u64, u64) {
        let trips = match &self.counters {
            Counters::Memory(_) => 0,
            Counters::Redis(r) => r.round_trips(),
        };
        (self.admissions.load(Ordering::Relaxed), trips)
    }
}

/// The pure decision both counter stores make, on the state they read:
/// checks every level, and returns what to write or why not.
pub(crate) struct LevelRead {
    pub rpm_tat: Option<f64>,
    pub tpm_tat: Option<f64>,
    pub concurrent: u64,
    /// Spent and reserved this month; `None`: not seeded.
    pub budget: Option<(u64, u64)>,
}

pub(crate) struct LevelWrite {
    pub rpm_tat: Option<f64>,
    pub tpm_tat: Option<f64>,
    pub concurrent: bool,
    pub budget: bool,
}

pub(crate) enum Decision {
    Admit {
        tokens: u64,
        rate: RateInfo,
        writes: Vec<LevelWrite>,
    },
    Refuse(Refusal),
    Seed(Vec<String>),
}

pub(crate) fn decide(ask: &Ask<'_>, reads: &[LevelRead], now: f64, s: &Settings) -> Decision {
    let spends = ask.tokens > 0;
    let refuse = |kind: LimitKind, level: usize, limit: u64, wait: Option<f64>, too_large| {
        Decision::Refuse(Refusal {
            kind,
            level,
            limit,
            wait: wait.map(|us| Duration::from_micros(us.ceil().max(0.0) as u64)),
            too_large,
        })
    };
    // The budget first: it may lower what a stream is granted.
    let mut grant = ask.tokens;
    if spends {
        let unseeded: Vec<String> = ask
            .levels
            .iter()
            .zip(reads)
            .filter(|(l, r)| l.limits.monthly_token_budget.is_some() && r.budget.is_none())
            .map(|(l, _)| l.key.clone())
            .collect();
        if !unseeded.is_empty() {
            return Decision::Seed(unseeded);
        }
        for (i, (l, r)) in ask.levels.iter().zip(reads).enumerate() {
            if let (Some(limit), Some((spent, reserved))) =
                (l.limits.monthly_token_budget, r.budget)
            {
                let left = limit.saturating_sub(spent.saturating_add(reserved));
                grant = grant.min(left);
                if grant < ask.min_tokens.max(1) {
                    let too_large = ask.min_tokens > limit;
                    return refuse(LimitKind::MonthlyTokenBudget, i, limit, None, too_large);
                }
            }
        }
    }
    let mut rate = RateInfo::default();
    let mut writes = Vec::with_capacity(reads.len());
    for (i, (l, r)) in ask.levels.iter().zip(reads).enumerate() {
        let mut w = LevelWrite {
            rpm_tat: None,
            tpm_tat: None,
            concurrent: false,
            budget: spends && l.limits.monthly_token_budget.is_some(),
        };
        // The two rates are checked the same way; each refusal names its kind.
        let rate_check = |g: Gcra, tat, cost, kind: LimitKind| {
            let limit = l.limits.get(kind).unwrap_or_default();
            match g.check(tat, now, cost) {
                gcra::Check::Admit {
                    tat,
                    remaining,
                    reset,
                } => Ok((tat, window(limit, remaining, reset))),
                gcra::Check::Wait(us) => Err(refuse(kind, i, limit, Some(us), false)),
                gcra::Check::TooLarge => Err(refuse(kind, i, limit, None, true)),
            }
        };
        if let Some(g) = s.rpm(&l.limits) {
            match rate_check(g, r.rpm_tat, 1, LimitKind::RequestsPerMinute) {
                Ok((tat, win)) => {
                    w.rpm_tat = Some(tat);
                    RateInfo::keep(&mut rate.requests, win);
                }
                Err(refused) => return refused,
            }
        }
        if let (Some(g), true) = (s.tpm(&l.limits), spends) {
            match rate_check(g, r.tpm_tat, grant, LimitKind::TokensPerMinute) {
                Ok((tat, win)) => {
                    w.tpm_tat = Some(tat);
                    RateInfo::keep(&mut rate.tokens, win);
                }
                Err(refused) => return refused,
            }
        }
        if let Some(limit) = l.limits.concurrent_requests {
            if r.concurrent >= limit {
                // Freed when a request ends; a second is a fair guess.
                return refuse(LimitKind::ConcurrentRequests, i, limit, Some(1e6), false);
            }
            w.concurrent = true;
        }
        writes.push(w);
    }
    Decision::Admit {
        tokens: grant,
        rate,
        writes,
    }
}

fn window(limit: u64, remaining: u64, reset_us: f64) -> Window {
    Window {
        limit,
        remaining,
        reset: Duration::from_micros(reset_us.ceil().max(0.0) as u64),
    }
}

pub(crate) fn held(ask: &Ask<'_>, tokens: u64, writes: &[LevelWrite], s: &Settings) -> Held {
    Held {
        scope: ask.scope.to_owned(),
        month: ask.month.to_owned(),
        lease: ask.lease.to_owned(),
        reserved: tokens,
        levels: ask
            .levels
            .iter()
            .zip(writes)
            .map(|(l, w)| HeldLevel {
                key: l.key.clone(),
                tpm: w.tpm_tat.and_then(|_| s.tpm(&l.limits)),
                concurrent: w.concurrent,
                budget: w.budget,
            })
            .collect(),
    }
}

/// One level's status from what the counters hold.
pub(crate) fn level_status(l: &Limits, r: &LevelRead, now: f64, s: &Settings) -> LevelStatus {
    let peek = |g: Option<Gcra>, tat: Option<f64>, limit: Option<u64>| {
        let (g, limit) = (g?, limit?);
        let ahead = (tat.unwrap_or(now) - now).max(0.0);
        let remaining = ((g.tolerance - ahead + 0.5) / g.interval).floor().max(0.0) as u64;
        Some(window(limit, remaining, ahead))
    };
    LevelStatus {
        requests: peek(s.rpm(l), r.rpm_tat, l.requests_per_minute),
        tokens: peek(s.tpm(l), r.tpm_tat, l.tokens_per_minute),
        concurrent_in_use: r.concurrent,
        budget: r.budget,
    }
}
