//! A tenant's log sink: where its records are exported (its own HTTPS
//! webhook or S3-compatible bucket), and the arithmetic of delivery:
//! signatures, object names, backoff and the bounded backlog.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{LogError, Record, Result};

/// A sink as the tenant writes it. Stored sealed with the tenant's data
/// key (it holds the webhook secret or the bucket's credentials); shown
/// back without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    Webhook {
        url: String,
        /// The key of each delivery's HMAC-SHA256 signature.
        secret: String,
    },
    S3 {
        bucket: String,
        /// Objects are named `{prefix}{tenant}/{stream}/{first}-{last}.jsonl`.
        #[serde(default)]
        prefix: String,
        /// An S3-compatible server; absent: AWS.
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default = "default_region")]
        region: String,
        access_key_id: String,
        secret_access_key: String,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

impl SinkConfig {
    /// Checks a sink before it is stored. `insecure` (the operator's
    /// `logs.allow_insecure_sinks`) allows plain HTTP and private addresses.
    pub fn validate(&self, insecure: bool) -> Result<()> {
        let bad = |m: String| Err(LogError::Invalid(m));
        match self {
            SinkConfig::Webhook { url, secret } => {
                check_url("url", url, insecure)?;
                if !(16..=256).contains(&secret.len()) {
                    return bad("secret must be 16 to 256 characters".into());
                }
            }
            SinkConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => {
                if !fief_config::is_bucket_name(bucket) {
                    return bad("bucket must be 3 to 63 of a-z, 0-9, '-' and '.'".into());
                }
                let path_ok = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
                if prefix.len() > 256 || !prefix.chars().all(path_ok) || prefix.contains("..") {
                    return bad(
                        "prefix must be at most 256 of letters, digits, '-', '_', '.' and '/'"
                            .into(),
                    );
                }
                if let Some(e) = endpoint {
                    check_url("endpoint", e, insecure)?;
                }
                if region.is_empty() || region.len() > 64 {
                    return bad("region must be 1 to 64 characters".into());
                }
                if access_key_id.is_empty() || secret_access_key.is_empty() {
                    return bad("access_key_id and secret_access_key are required".into());
                }
            }
        }
        Ok(())
    }

    /// The sink as shown back: everything but its secrets.
    pub fn public(&self) -> Value {
        match self {
            SinkConfig::Webhook { url, .. } => json!({"type": "webhook", "url": url}),
            SinkConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                ..
            } => json!({
                "type": "s3", "bucket": bucket, "prefix": prefix, "endpoint": endpoint,
                "region": region, "access_key_id": access_key_id,
            }),
        }
    }
}

fn check_url(field: &str, raw: &str, insecure: bool) -> Result<()> {
    let bad = |m: String| Err(LogError::Invalid(format!("{field} {m}")));
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return bad(format!("is not a URL: {e}")),
    };
    match url.scheme() {
        "https" => {}
        "http" if insecure => {}
        "http" => return bad("must be https (the operator has not allowed plain http)".into()),
        s => return bad(format!("must be https, not {s}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not hold credentials".into());
    }
    let Some(host) = url.host_str() else {
        return bad("has no host".into());
    };
    if !insecure && is_private(host) {
        return bad(format!(
            "names {host}, a loopback or private address the operator has not allowed"
        ));
    }
    Ok(())
}

/// Loopback, private, link-local and unspecified addresses, and `localhost`.
/// (A public name that resolves to a private address is not caught here;
/// an operator who must rule that out egresses through a proxy.)
fn is_private(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified()
        }
        Ok(IpAddr::V6(a)) => {
            let seg = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || (seg & 0xfe00) == 0xfc00
                || (seg & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
        Err(_) => false,
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of the exact body with the tenant's secret.
/// The receiver recomputes it over the bytes it got.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// Where a sink stands: the last sequence number delivered, and how many
/// records were skipped because it fell too far behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub delivered: i64,
    pub skipped: i64,
}

/// Bounds the backlog: a sink more than `backlog` records behind `latest`
/// moves on to the newest `backlog`, the oldest skipped and counted. The
/// skipped records stay in the tenant's log.
pub fn bound_backlog(p: Progress, latest: i64, backlog: u64) -> Progress {
    let backlog = i64::try_from(backlog).unwrap_or(i64::MAX);
    let behind = latest - p.delivered;
    if behind > backlog {
        let skip = behind - backlog;
        Progress {
            delivered: p.delivered + skip,
            skipped: p.skipped + skip,
        }
    } else {
        p
    }
}

/// The wait before the next try after `failures` failures in a row:
/// 0.5 s doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_millis(ms.min(30_000))
}

/// One delivery: records `first..=last` of a tenant's stream.
#[derive(Debug, Clone, Serialize)]
pub struct Batch<'a> {
    pub tenant: &'a str,
    pub stream: &'a str,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Records skipped so far by this sink (the backlog's bound), so a
    /// receiver can tell a gap from a loss.
    pub skipped: i64,
    pub records: &'a [Record],
}

impl Batch<'_> {
    /// A webhook's body: one JSON document.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An object's body: one JSON record per line.
    pub fn jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for r in self.records {
            if let Ok(line) = serde_json::to_vec(r) {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        out
    }

    /// The object a batch is written to; zero-padded so names sort in
    /// sequence order.
    pub fn object_key(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}/{}/{:020}-{:020}.jsonl",
            self.tenant, self.stream, self.first_seq, self.last_seq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> SinkConfig {
        SinkConfig::Webhook {
            url: url.into(),
            secret: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn sinks_must_be_https_and_public_unless_the_operator_allows_otherwise() {
        assert!(webhook("https://logs.example.com/in")
            .validate(false)
            .is_ok());
        for bad in [
            "http://logs.example.com/in",
            "https://127.0.0.1/in",
            "https://localhost:8443/in",
            "https://10.1.2.3/in",
            "https://[::1]/in",
            "https://169.254.169.254/latest",
            "https://user:pw@logs.example.com/in",
            "ftp://logs.example.com",
            "not a url",
        ] {
            assert!(webhook(bad).validate(false).is_err(), "{bad}");
        }
        assert!(webhook("http://127.0.0.1:9000/in").validate(true).is_ok());
        let short = SinkConfig::Webhook {
            url: "https://logs.example.com".into(),
            secret: "short".into(),
        };
        assert!(short
            .validate(false)
            .unwrap_err()
            .to_string()
            .contains("secret"));
    }

    #[test]
    fn secrets_are_never_shown_back() {
        let s: SinkConfig = serde_json::from_value(json!({
            "type": "s3", "bucket": "tenant-logs", "access_key_id": "AKIA",
            "secret_access_key": "very-secret", "endpoint": "https://s3.example.com",
        }))
        .unwrap();
        assert!(s.validate(false).is_ok());
        let shown = s.public().to_string();
        assert!(shown.contains("tenant-logs") && !shown.contains("very-secret"));
        assert!(!webhook("https://a.example.com")
            .public()
            .to_string()
            .contains("0123456789"));
        let unknown: std::result::Result<SinkConfig, _> = serde_json::from_value(
            json!({"type": "webhook", "url": "https://a", "secret": "x", "extra": 1}),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_sink_that_falls_behind_skips_the_oldest_and_counts_them() {
        let p = Progress::default();
        assert_eq!(bound_backlog(p, 50, 100), p);
        let moved = bound_backlog(
            Progress {
                delivered: 10,
                skipped: 5,
            },
            250,
            100,
        );
        assert_eq!(
            moved,
            Progress {
                delivered: 150,
                skipped: 145
            }
        );
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn object_names_sort_in_sequence_order() {
        let b = Batch {
            tenant: "acme",
            stream: "invocations",
            first_seq: 9,
            last_seq: 10,
            skipped: 0,
            records: &[],
        };
        assert_eq!(
            b.object_key("logs/"),
            "logs/acme/invocations/00000000000000000009-00000000000000000010.jsonl"
        );
    }
}
