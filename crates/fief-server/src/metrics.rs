//! Prometheus text metrics for the admin listener. Labels have bounded
//! cardinality: an endpoint label is recorded only after the endpoint was
//! authorised, so it is `shared` or the id of a tenant with its own endpoint,
//! never an attacker-chosen string.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use fief_serving::CacheStats;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Invocations {
    outcomes: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    /// Model runs by worker pool (`shared`, or `silo-<tenant>`).
    jobs: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Metrics {
    invocations: Mutex<Invocations>,
    kb_rejected: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Chunks that reached a knowledge-base query but failed to open under
    /// the caller's key (another tenant's, or tampered). Should stay 0.
    pub fn chunks_rejected(&self, n: usize) {
        self.kb_rejected
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one model run on a worker pool.
    pub fn job(&self, pool: &str) {
        if let Ok(mut inv) = self.invocations.lock() {
            *inv.jobs.entry(pool.to_owned()).or_default() += 1;
        }
    }

    /// Drops an offboarded tenant's labels (its endpoint and its silo
    /// pool), so the series of tenants that are gone do not stay forever.
    pub fn forget_tenant(&self, tenant: &str) {
        let Ok(mut inv) = self.invocations.lock() else {
            return;
        };
        let pool = format!("silo-{tenant}");
        inv.outcomes.retain(|(endpoint, _), _| endpoint != tenant);
        inv.latency.retain(|endpoint, _| endpoint != tenant);
        inv.jobs.retain(|p, _| *p != pool);
    }

    /// Records one invocation on an authorised endpoint.
    pub fn invocation(&self, endpoint: &str, ok: bool, elapsed: Duration) {
        let Ok(mut inv) = self.invocations.lock() else {
            return;
        };
        let outcome = if ok { "ok" } else { "error" };
        *inv.outcomes
            .entry((endpoint.to_owned(), outcome))
            .or_default() += 1;
        let h = inv.latency.entry(endpoint.to_owned()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// `items_rejected`: the store's count of table items that failed to
    /// open under the caller's key.
    pub fn render(&self, cache: &CacheStats, items_rejected: u64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "fief_model_loads_total",
            "counter",
            "Models loaded into memory: by an upload (checked by loading it) or a first invocation.",
            cache.loads.to_string(),
        );
        metric(
            "fief_model_load_failures_total",
            "counter",
            "Model loads that failed.",
            cache.load_failures.to_string(),
        );
        metric(
            "fief_model_load_seconds_total",
            "counter",
            "Time spent loading models.",
            cache.load_seconds.to_string(),
        );
        metric(
            "fief_model_evictions_total",
            "counter",
            "Models evicted to stay within the memory budget.",
            cache.evictions.to_string(),
        );
        metric(
            "fief_model_cache_hits_total",
            "counter",
            "Invocations served by a resident model.",
            cache.hits.to_string(),
        );
        metric(
            "fief_model_cache_misses_total",
            "counter",
            "Invocations that found their model not loaded (uploads load without a miss).",
            cache.misses.to_string(),
        );
        metric(
            "fief_model_resident_bytes",
            "gauge",
            "Bytes of resident models (by ONNX size).",
            cache.resident_bytes.to_string(),
        );
        metric(
            "fief_model_resident_models",
            "gauge",
            "Resident models.",
            cache.entries.to_string(),
        );
        metric(
            "fief_model_cache_budget_bytes",
            "gauge",
            "The model memory budget.",
            cache.budget_bytes.to_string(),
        );

        metric(
            "fief_kb_chunks_rejected_total",
            "counter",
            "Knowledge-base chunks that failed authentication on the query path (never returned; should stay 0).",
            self.kb_rejected
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );

        metric(
            "fief_items_rejected_total",
            "counter",
            "Table items and private log records of another tenant that reached a read or delete and failed to open under the caller's key (never used; should stay 0).",
            items_rejected.to_string(),
        );

        let Ok(inv) = self.invocations.lock() else {
            return out;
        };
        out.push_str("# HELP fief_invocations_total Invocations by endpoint and outcome.\n# TYPE fief_invocations_total counter\n");
        for ((endpoint, outcome), n) in &inv.outcomes {
            let _ = writeln!(
                out,
                "fief_invocations_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP fief_invocation_duration_seconds Invocation latency by endpoint.\n# TYPE fief_invocation_duration_seconds histogram\n");
        for (endpoint, h) in &inv.latency {
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "fief_invocation_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "fief_invocation_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "fief_invocation_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "fief_invocation_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP fief_worker_pool_jobs_total Model runs by worker pool.\n# TYPE fief_worker_pool_jobs_total counter\n");
        for (pool, n) in &inv.jobs {
            let _ = writeln!(out, "fief_worker_pool_jobs_total{{pool=\"{pool}\"}} {n}");
        }
        out
    }
}
