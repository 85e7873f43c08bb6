//! `[object_store]`: where model bytes live when not under the data
//! directory: an S3-compatible bucket shared by every replica.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket` or `s3://bucket/prefix`. Credentials come from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and, if set,
    /// `AWS_SESSION_TOKEN`), never from this file.
    pub url: String,
    /// An S3-compatible server (path-style requests); absent: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Plain `http://` to the endpoint (a local server).
    #[serde(default)]
    pub allow_http: bool,
    /// An operation retries a failing bucket for at most this long, then
    /// fails (a 503): a bucket that is away does not hold requests.
    #[serde(default = "default_retry_ms")]
    pub retry_timeout_ms: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_retry_ms() -> u64 {
    1500
}

/// An S3 bucket name as fief accepts one: 3 to 63 of a-z, 0-9, '-' and '.'.
pub fn is_bucket_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    (3..=63).contains(&name.len()) && name.chars().all(ok)
}

impl ObjectStoreConfig {
    /// `(bucket, prefix)` of the URL; the prefix has no leading or trailing `/`.
    pub fn bucket_and_prefix(&self) -> Result<(String, String), ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(format!("object_store.url {m}"));
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("must be s3://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Err(invalid(
                "names a bucket of 3 to 63 of a-z, 0-9, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        let path_ok = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
        if !prefix.chars().all(path_ok) || prefix.split('/').any(|s| s == "..") {
            return Err(invalid(
                "has a prefix of letters, digits, '-', '_', '.' and '/' only",
            ));
        }
        Ok((bucket.to_owned(), prefix.to_owned()))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.bucket_and_prefix()?;
        if let Some(e) = &self.endpoint {
            let plain = e.starts_with("http://");
            if !(e.starts_with("https://") || plain) {
                return Err(ConfigError::Invalid(
                    "object_store.endpoint must be an http(s):// URL".into(),
                ));
            }
            if plain && !self.allow_http {
                return Err(ConfigError::Invalid(
                    "object_store.endpoint is plain http; set object_store.allow_http = true for a local server".into(),
                ));
            }
        }
        if self.region.is_empty() {
            return Err(ConfigError::Invalid("object_store.region is empty".into()));
        }
        if !(100..=600_000).contains(&self.retry_timeout_ms) {
            return Err(ConfigError::Invalid(
                "object_store.retry_timeout_ms must be between 100 and 600000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url: url.into(),
            endpoint: None,
            region: default_region(),
            allow_http: false,
            retry_timeout_ms: default_retry_ms(),
        }
    }

    #[test]
    fn urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            at("s3://fief-models").bucket_and_prefix().unwrap(),
            ("fief-models".into(), String::new())
        );
        assert_eq!(
            at("s3://fief-models/prod/eu/").bucket_and_prefix().unwrap(),
            ("fief-models".into(), "prod/eu".into())
        );
        for bad in [
            "fief-models",
            "s3://",
            "s3://Bad_Bucket",
            "s3://b/../x",
            "gs://bucket",
        ] {
            assert!(at(bad).validate().is_err(), "{bad}");
        }
        let mut local = at("s3://fief-models");
        local.endpoint = Some("http://127.0.0.1:9000".into());
        assert!(local
            .validate()
            .unwrap_err()
            .to_string()
            .contains("allow_http"));
        local.allow_http = true;
        assert!(local.validate().is_ok());
    }
}
