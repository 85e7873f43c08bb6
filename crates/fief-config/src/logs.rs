//! `[logs]`: each tenant's private invocation log and its export to the
//! tenant's own webhook or bucket.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Off: no invocation is logged and the log routes answer 404.
    pub enabled: bool,
    /// A tenant's retention until it sets its own.
    pub default_retention_days: u32,
    /// The longest retention a tenant may set.
    pub max_retention_days: u32,
    /// A record's content larger than this (serialised) is kept truncated.
    pub max_record_bytes: usize,
    /// Most records written in one transaction per tenant.
    pub batch_max: usize,
    /// Most records one sink delivery carries.
    pub sink_batch: usize,
    /// Records a sink may fall behind by; beyond it the oldest undelivered
    /// are skipped (still in the tenant's log) and counted as a gap.
    pub sink_backlog: u64,
    /// Allows `http://` sinks and sinks on loopback or private addresses.
    /// Off in production: a tenant could otherwise make the gateway post
    /// to services on the operator's own network.
    pub allow_insecure_sinks: bool,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            enabled: true,
            default_retention_days: 30,
            max_retention_days: 3650,
            max_record_bytes: 1 << 20,
            batch_max: 256,
            sink_batch: 100,
            sink_backlog: 100_000,
            allow_insecure_sinks: false,
        }
    }
}

impl LogsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("logs.{m}")));
        if self.default_retention_days == 0 || self.default_retention_days > self.max_retention_days
        {
            return invalid("default_retention_days must be between 1 and max_retention_days");
        }
        if !(1024..=64 << 20).contains(&self.max_record_bytes) {
            return invalid("max_record_bytes must be between 1024 and 67108864");
        }
        if !(1..=10_000).contains(&self.batch_max) {
            return invalid("batch_max must be between 1 and 10000");
        }
        if !(1..=10_000).contains(&self.sink_batch) {
            return invalid("sink_batch must be between 1 and 10000");
        }
        if self.sink_backlog < self.sink_batch as u64 {
            return invalid("sink_backlog must be at least sink_batch");
        }
        Ok(())
    }
}
