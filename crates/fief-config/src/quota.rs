//! `[quotas]` (limits per tier, admission settings, fair sharing) and
//! `[redis]` (where the counters live when several replicas share them).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The limits of one tenant, role, key or user; `None`: no limit of that
/// kind at this level. Budgets count tokens today; a money budget joins
/// them once prices exist (the arithmetic counts units, not tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Foundation-model tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u64>,
    /// Foundation-model tokens per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_token_budget: Option<u64>,
}

/// The kinds of limit, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerMinute,
    ConcurrentRequests,
    MonthlyTokenBudget,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::RequestsPerMinute,
        LimitKind::TokensPerMinute,
        LimitKind::ConcurrentRequests,
        LimitKind::MonthlyTokenBudget,
    ];
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::ConcurrentRequests => "concurrent_requests",
            LimitKind::MonthlyTokenBudget => "monthly_token_budget",
        }
    }
}

impl Limits {
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::TokensPerMinute => self.tokens_per_minute,
            LimitKind::ConcurrentRequests => self.concurrent_requests,
            LimitKind::MonthlyTokenBudget => self.monthly_token_budget,
        }
    }
    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        let slot = match kind {
            LimitKind::RequestsPerMinute => &mut self.requests_per_minute,
            LimitKind::TokensPerMinute => &mut self.tokens_per_minute,
            LimitKind::ConcurrentRequests => &mut self.concurrent_requests,
            LimitKind::MonthlyTokenBudget => &mut self.monthly_token_budget,
        };
        *slot = value;
    }
    pub fn is_empty(&self) -> bool {
        LimitKind::ALL.iter().all(|k| self.get(*k).is_none())
    }
    /// `self`'s values where set, else `fallback`'s.
    pub fn or(&self, fallback: &Limits) -> Limits {
        let mut out = *fallback;
        for k in LimitKind::ALL {
            if let Some(v) = self.get(k) {
                out.set(k, Some(v));
            }
        }
        out
    }
    /// The first limit of `self` above the same kind in `cap` (a level may
    /// only lower what the level above it allows).
    pub fn above(&self, cap: &Limits) -> Option<(LimitKind, u64, u64)> {
        LimitKind::ALL
            .into_iter()
            .find_map(|k| match (self.get(k), cap.get(k)) {
                (Some(mine), Some(theirs)) if mine > theirs => Some((k, mine, theirs)),
                _ => None,
            })
    }
}

/// A tier's defaults (`[quotas.pool]`…) or one tenant's own settings:
/// limits and a weight in fair sharing. A tenant's unset values are its
/// tier's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_token_budget: Option<u64>,
    /// Share of the shared compute against other backlogged tenants (1
    /// when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

impl QuotaSettings {
    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
    /// Settings of `limits` and `weight`.
    pub fn new(limits: Limits, weight: Option<f64>) -> Self {
        QuotaSettings {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            concurrent_requests: limits.concurrent_requests,
            monthly_token_budget: limits.monthly_token_budget,
            weight,
        }
    }
    /// `self`'s values where set, else `fallback`'s.
    pub fn or(&self, fallback: &QuotaSettings) -> QuotaSettings {
        Self::new(
            self.limits().or(&fallback.limits()),
            self.weight.or(fallback.weight),
        )
    }
    pub fn validate(&self) -> Result<(), String> {
        if let Some(w) = self.weight {
            if !(w.is_finite() && w > 0.0 && w <= 1000.0) {
                return Err("weight must be above 0 and at most 1000".into());
            }
        }
        check_limits(&self.limits())
    }
    pub fn limits(&self) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            concurrent_requests: self.concurrent_requests,
            monthly_token_budget: self.monthly_token_budget,
        }
    }
}

/// What admission does when the shared counters cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// 503: a limited request is never admitted uncounted.
    #[default]
    Deny,
    /// Admit without counting that kind of limit.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnStoreErrorConfig {
    pub requests_per_minute: OnStoreError,
    pub tokens_per_minute: OnStoreError,
    pub concurrent_requests: OnStoreError,
    pub monthly_token_budget: OnStoreError,
}

impl OnStoreErrorConfig {
    pub fn get(&self, kind: LimitKind) -> OnStoreError {
        match kind {
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::TokensPerMinute => self.tokens_per_minute,
            LimitKind::ConcurrentRequests => self.concurrent_requests,
            LimitKind::MonthlyTokenBudget => self.monthly_token_budget,
        }
    }
}

/// How the shared ONNX pool and pooled upstreams hand out their slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// Weighted fair queueing by virtual token counters.
    #[default]
    Fair,
    /// First come, first served (for comparison).
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    pub pool: QuotaSettings,
    pub bridge: QuotaSettings,
    pub silo: QuotaSettings,
    /// A request rate may be exceeded by this many seconds' worth of
    /// requests at once (the GCRA burst), at least one request.
    pub request_burst_secs: u64,
    /// The same for tokens; a request whose reservation is larger than the
    /// burst can never fit and is refused as too large.
    pub token_burst_secs: u64,
    /// The output tokens reserved (and sent upstream as `max_tokens`) for a
    /// call that names none, when a token limit applies to it.
    pub default_max_tokens: u64,
    /// A concurrency slot or budget reservation of a replica that died is
    /// freed after this long (shared counters only).
    pub lease_secs: u64,
    pub on_store_error: OnStoreErrorConfig,
    pub scheduling: Scheduling,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            pool: QuotaSettings::default(),
            bridge: QuotaSettings::default(),
            silo: QuotaSettings::default(),
            request_burst_secs: 6,
            token_burst_secs: 60,
            default_max_tokens: 1024,
            lease_secs: 600,
            on_store_error: OnStoreErrorConfig::default(),
            scheduling: Scheduling::Fair,
        }
    }
}

impl QuotasConfig {
    pub fn tier(&self, tier: fief_core::Tier) -> &QuotaSettings {
        match tier {
            fief_core::Tier::Pool => &self.pool,
            fief_core::Tier::Bridge => &self.bridge,
            fief_core::Tier::Silo => &self.silo,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("quotas: {m}")));
        for (name, t) in [
            ("pool", &self.pool),
            ("bridge", &self.bridge),
            ("silo", &self.silo),
        ] {
            if let Err(m) = t.validate() {
                return Err(ConfigError::Invalid(format!("quotas.{name}: {m}")));
            }
        }
        if !(1..=3600).contains(&self.request_burst_secs)
            || !(1..=3600).contains(&self.token_burst_secs)
        {
            return invalid("request_burst_secs and token_burst_secs must be between 1 and 3600");
        }
        if self.default_max_tokens == 0 {
            return invalid("default_max_tokens must be at least 1");
        }
        if self.lease_secs < 10 {
            return invalid("lease_secs must be at least 10");
        }
        Ok(())
    }
}

/// Limits are whole numbers of at least 1 (0 would refuse everything; a
/// tenant to be stopped is offboarded or has its keys revoked) and at most
/// 10^15, so the counters' arithmetic cannot overflow.
pub fn check_limits(l: &Limits) -> Result<(), String> {
    for k in LimitKind::ALL {
        if let Some(v) = l.get(k) {
            if !(1..=1_000_000_000_000_000).contains(&v) {
                return Err(format!(
                    "{} must be between 1 and 10^15 (got {v})",
                    k.name()
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`; no TLS or password yet.
    pub url: String,
    /// One admission call that takes longer counts as Redis unreachable.
    pub timeout_ms: u64,
    /// Connections kept open to it.
    pub connections: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 250,
            connections: 8,
        }
    }
}

impl RedisConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("redis: {m}")));
        if !self.url.starts_with("redis://") {
            return invalid("url must be a redis://host:port URL");
        }
        if self.timeout_ms == 0 || !(1..=256).contains(&self.connections) {
            return invalid("timeout_ms must be at least 1 and connections between 1 and 256");
        }
        Ok(())
    }
}
