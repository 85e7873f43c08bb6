//! `[llm]`: the foundation-model upstreams fief routes to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// OpenAI-compatible servers, each serving some models.
    pub upstreams: Vec<UpstreamConfig>,
    /// Further deployments tried after a connect error, a 5xx or a 429, as
    /// long as no byte has reached the client.
    pub max_retries: usize,
    /// Consecutive failures after which a deployment rests.
    pub cooldown_after: u32,
    /// How long it rests before one request probes it again.
    pub cooldown_secs: u64,
    /// Largest `max_tokens` a request may ask for (also the estimate for a
    /// request that names none).
    pub max_output_tokens: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            max_retries: 2,
            cooldown_after: 3,
            cooldown_secs: 30,
            max_output_tokens: 32_768,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Names the upstream in config, metrics and usage records (never shown
    /// to tenants).
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8000/v1`; fief posts to
    /// `{url}/chat/completions`.
    pub url: String,
    /// Environment variable holding the upstream's bearer token. Upstream
    /// keys come only from here: never from tenants, never to them.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Models it serves: an id, or `{ id, alias, tags, fallbacks }`.
    pub models: Vec<LlmModelEntry>,
    /// Requests in flight to it at most; more wait for a slot.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// PEM file of the CA that signs its certificate (added to the system
    /// and webpki roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Only these tenants may use it.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// A dedicated deployment: its tenants' requests for its models never go
    /// to a shared upstream, and no other tenant can name its models.
    #[serde(default)]
    pub exclusive: bool,
}

fn default_max_concurrency() -> usize {
    64
}
fn default_timeout() -> u64 {
    120
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LlmModelEntry {
    Id(String),
    Full(LlmModelConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmModelConfig {
    /// The id the upstream knows it by.
    pub id: String,
    /// The name tenants see and use (the id when absent).
    #[serde(default)]
    pub alias: Option<String>,
    /// Cedar tags of the `Fief::FoundationModel` resource, e.g.
    /// `{ Size = "large", Provider = "meta" }`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Models (by the name tenants see) answering when every deployment of
    /// this one is down.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

impl LlmModelEntry {
    pub fn config(&self) -> LlmModelConfig {
        match self {
            LlmModelEntry::Id(id) => LlmModelConfig {
                id: id.clone(),
                alias: None,
                tags: BTreeMap::new(),
                fallbacks: Vec::new(),
            },
            LlmModelEntry::Full(c) => c.clone(),
        }
    }
}

impl LlmModelConfig {
    /// The name tenants see.
    pub fn name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.id)
    }
}

impl LlmConfig {
    pub(crate) fn validate(
        &self,
        env_set: &dyn Fn(&str) -> bool,
        check_env: bool,
    ) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("llm: {m}")));
        if self.cooldown_after == 0 || self.cooldown_secs == 0 {
            return invalid("cooldown_after and cooldown_secs must be at least 1".into());
        }
        if self.max_retries > 10 {
            return invalid("max_retries must be at most 10".into());
        }
        if self.max_output_tokens == 0 {
            return invalid("max_output_tokens must be at least 1".into());
        }
        let mut names = BTreeSet::new();
        // name (lower case) -> (tags, fallbacks) as first declared
        let mut models: BTreeMap<String, LlmModelConfig> = BTreeMap::new();
        for u in &self.upstreams {
            let at = |m: &str| format!("upstream {:?}: {m}", u.name);
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return invalid(format!(
                    "upstream names must be unique and non-empty ({:?} is repeated or empty)",
                    u.name
                ));
            }
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return invalid(at("url must start with http:// or https://"));
            }
            if u.max_concurrency == 0 || u.timeout_secs == 0 {
                return invalid(at("max_concurrency and timeout_secs must be at least 1"));
            }
            if u.models.is_empty() {
                return invalid(at("models must name at least one model"));
            }
            if u.exclusive && u.tenants.is_empty() {
                return invalid(at("exclusive = true needs tenants = [...]"));
            }
            for t in &u.tenants {
                if fief_core::TenantId::parse(t).is_err() {
                    return invalid(at(&format!("{t:?} is not a valid tenant id")));
                }
            }
            if let Some(var) = &u.api_key_env {
                if check_env && !env_set(var) {
                    return invalid(at(&format!(
                        "api_key_env names {var}, which is not set in the environment"
                    )));
                }
            }
            if let Some(ca) = &u.ca_file {
                if !ca.is_file() {
                    return invalid(at(&format!("ca_file {} is not a file", ca.display())));
                }
            }
            let mut here = BTreeSet::new();
            for m in &u.models {
                let m = m.config();
                let name = m.name().to_lowercase();
                // `=` marks a tag match in allowlists, `%` an escape in names.
                if m.id.is_empty()
                    || name.is_empty()
                    || name.contains(|c: char| c.is_whitespace() || c == '=' || c == '%')
                    || m.id
                        .contains(|c: char| c.is_whitespace() || c == '=' || c == '%')
                {
                    return invalid(at(
                        "a model id or alias is empty or holds white space, `=` or `%`",
                    ));
                }
                if !here.insert(name.clone()) {
                    return invalid(at(&format!("model {:?} is listed twice", m.name())));
                }
                for key in m.tags.keys() {
                    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return invalid(at(&format!(
                            "model {:?}: tag key {key:?} must be ASCII letters and digits",
                            m.name()
                        )));
                    }
                }
                match models.get(&name) {
                    Some(seen)
                        if (seen.tags != m.tags && !m.tags.is_empty() && !seen.tags.is_empty())
                            || (seen.fallbacks != m.fallbacks
                                && !m.fallbacks.is_empty()
                                && !seen.fallbacks.is_empty()) =>
                    {
                        return invalid(format!(
                            "model {:?} is declared by several upstreams with different tags or fallbacks",
                            m.name()
                        ));
                    }
                    _ => {
                        let entry = models.entry(name).or_insert_with(|| m.clone());
                        if entry.tags.is_empty() {
                            entry.tags = m.tags.clone();
                        }
                        if entry.fallbacks.is_empty() {
                            entry.fallbacks = m.fallbacks.clone();
                        }
                    }
                }
            }
        }
        // Upstream ids resolve to their model too, so an id must not be
        // another model's alias.
        for u in &self.upstreams {
            for m in &u.models {
                let m = m.config();
                if m.alias.is_some() {
                    if let Some(other) = models.get(&m.id.to_lowercase()) {
                        if other.name().to_lowercase() != m.name().to_lowercase() {
                            return invalid(format!(
                                "upstream id {:?} of model {:?} is also the name of model {:?}",
                                m.id,
                                m.name(),
                                other.name()
                            ));
                        }
                    }
                }
            }
        }
        for (name, m) in &models {
            for f in &m.fallbacks {
                if !models.contains_key(&f.to_lowercase()) {
                    return invalid(format!(
                        "model {:?}: fallback {f:?} is served by no upstream",
                        m.name()
                    ));
                }
                if f.to_lowercase() == *name {
                    return invalid(format!("model {:?} names itself as a fallback", m.name()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<LlmConfig, String> {
        let c: LlmConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(&|v| v == "SET_KEY", true)
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn upstreams_and_models_parse() {
        let c = parse(
            r#"
            [[upstreams]]
            name = "a"
            url = "http://127.0.0.1:1/v1"
            api_key_env = "SET_KEY"
            models = ["m1", { id = "org/big", alias = "big", tags = { Size = "large" }, fallbacks = ["m1"] }]
            "#,
        )
        .unwrap();
        assert_eq!(c.upstreams[0].models[1].config().name(), "big");
        assert_eq!(c.upstreams[0].max_concurrency, 64);
    }

    #[test]
    fn mistakes_are_named() {
        let base = |extra: &str| {
            format!("[[upstreams]]\nname = \"a\"\nurl = \"http://x/v1\"\nmodels = [\"m\"]\n{extra}")
        };
        for (extra, expected) in [
            ("api_key_env = \"UNSET_KEY\"", "UNSET_KEY, which is not set"),
            ("tenant = [\"t\"]", "unknown field `tenant`"),
            ("exclusive = true", "exclusive = true needs tenants"),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://y/v1\"\nmodels = [\"n\"]",
                "unique",
            ),
            (
                "[[upstreams]]\nname = \"b\"\nurl = \"http://y/v1\"\nmodels = [{ id = \"n\", fallbacks = [\"gone\"] }]",
                "fallback \"gone\" is served by no upstream",
            ),
            ("tenants = [\"Not A Tenant\"]", "not a valid tenant id"),
        ] {
            let err = parse(&base(extra)).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let err =
            parse("[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\nmodels = [\"m\"]").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
    }
}
