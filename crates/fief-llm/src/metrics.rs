//! Prometheus counters of foundation-model calls. Labels are bounded by
//! config: model names and upstream names, never tenants.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::{Catalog, ModelId, UpstreamId};
use crate::{CallError, Usage};

/// Upper bounds (seconds) of the time-to-first-token histogram.
const TTFT_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
const ERROR_KINDS: [&str; 4] = ["rate_limited", "timeout", "failed", "resting"];

pub struct LlmMetrics {
    models: Vec<String>,
    upstreams: Vec<String>,
    /// Per model: prompt tokens, completion tokens, calls.
    tokens: Vec<[AtomicU64; 3]>,
    /// Per model: cumulative bucket counts, then sum (µs) and count.
    ttft: Vec<([AtomicU64; TTFT_BUCKETS.len()], AtomicU64, AtomicU64)>,
    errors: Vec<[AtomicU64; ERROR_KINDS.len()]>,
    retries: Vec<AtomicU64>,
}

impl LlmMetrics {
    pub fn new(catalog: &Catalog) -> Self {
        let models: Vec<String> = catalog.models().map(|(_, m)| m.name.clone()).collect();
        let upstreams: Vec<String> = catalog.upstreams().iter().map(|u| u.name.clone()).collect();
        Self {
            tokens: models.iter().map(|_| Default::default()).collect(),
            ttft: models.iter().map(|_| Default::default()).collect(),
            errors: upstreams.iter().map(|_| Default::default()).collect(),
            retries: upstreams.iter().map(|_| AtomicU64::new(0)).collect(),
            models,
            upstreams,
        }
    }

    pub fn record(&self, model: ModelId, usage: &Usage) {
        if let Some(t) = self.tokens.get(model.0) {
            t[0].fetch_add(usage.prompt_tokens, Ordering::Relaxed);
            t[1].fetch_add(usage.completion_tokens, Ordering::Relaxed);
            t[2].fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(ms), Some((buckets, sum, count))) = (usage.ttft_ms, self.ttft.get(model.0)) {
            let secs = ms as f64 / 1000.0;
            for (b, bound) in buckets.iter().zip(TTFT_BUCKETS) {
                if secs <= bound {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
            sum.fetch_add(ms * 1000, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn upstream_error(&self, u: UpstreamId, e: &CallError) {
        let kind = match e {
            CallError::RateLimited => 0,
            CallError::Timeout => 1,
            CallError::Failed(_) => 2,
            CallError::Resting => 3,
        };
        if let Some(e) = self.errors.get(u.0) {
            e[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn retry(&self, u: UpstreamId) {
        if let Some(r) = self.retries.get(u.0) {
            r.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends the Prometheus text of every counter.
    pub fn render(&self, out: &mut String) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP fief_llm_tokens_total Foundation-model tokens, by model and kind.\n# TYPE fief_llm_tokens_total counter\n");
        for (m, t) in self.models.iter().zip(&self.tokens) {
            let _ = writeln!(
                out,
                "fief_llm_tokens_total{{model=\"{m}\",kind=\"prompt\"}} {}",
                n(&t[0])
            );
            let _ = writeln!(
                out,
                "fief_llm_tokens_total{{model=\"{m}\",kind=\"completion\"}} {}",
                n(&t[1])
            );
        }
        out.push_str("# HELP fief_llm_calls_total Foundation-model calls answered, by model.\n# TYPE fief_llm_calls_total counter\n");
        for (m, t) in self.models.iter().zip(&self.tokens) {
            let _ = writeln!(out, "fief_llm_calls_total{{model=\"{m}\"}} {}", n(&t[2]));
        }
        out.push_str("# HELP fief_llm_time_to_first_token_seconds Time until a stream's first content reached the client.\n# TYPE fief_llm_time_to_first_token_seconds histogram\n");
        for (m, (buckets, sum, count)) in self.models.iter().zip(&self.ttft) {
            for (b, bound) in buckets.iter().zip(TTFT_BUCKETS) {
                let _ = writeln!(out, "fief_llm_time_to_first_token_seconds_bucket{{model=\"{m}\",le=\"{bound}\"}} {}", n(b));
            }
            let _ = writeln!(
                out,
                "fief_llm_time_to_first_token_seconds_bucket{{model=\"{m}\",le=\"+Inf\"}} {}",
                n(count)
            );
            let _ = writeln!(
                out,
                "fief_llm_time_to_first_token_seconds_sum{{model=\"{m}\"}} {}",
                n(sum) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "fief_llm_time_to_first_token_seconds_count{{model=\"{m}\"}} {}",
                n(count)
            );
        }
        out.push_str("# HELP fief_llm_upstream_errors_total Failed upstream attempts, by upstream and kind.\n# TYPE fief_llm_upstream_errors_total counter\n");
        for (u, e) in self.upstreams.iter().zip(&self.errors) {
            for (kind, c) in ERROR_KINDS.iter().zip(e) {
                let _ = writeln!(
                    out,
                    "fief_llm_upstream_errors_total{{upstream=\"{u}\",kind=\"{kind}\"}} {}",
                    n(c)
                );
            }
        }
        out.push_str("# HELP fief_llm_retries_total Attempts sent to another deployment after a failure, by the upstream retried on.\n# TYPE fief_llm_retries_total counter\n");
        for (u, r) in self.upstreams.iter().zip(&self.retries) {
            let _ = writeln!(out, "fief_llm_retries_total{{upstream=\"{u}\"}} {}", n(r));
        }
    }
}
