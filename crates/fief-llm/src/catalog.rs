//! The models the deployment's upstreams serve, and which of them a tenant
//! can reach at all (before Cedar decides per principal). Pure: built once
//! from config.

use std::collections::{BTreeSet, HashMap};

use fief_config::LlmConfig;
use fief_core::{Tags, TenantId};

/// Index of a model in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub usize);

/// Index of an upstream in config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub usize);

#[derive(Debug, Clone)]
pub struct Model {
    /// The name tenants see (alias, else the upstream id).
    pub name: String,
    pub tags: Tags,
    pub fallbacks: Vec<ModelId>,
    pub deployments: Vec<Deployment>,
}

/// One upstream serving one model, under the id it knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub upstream: UpstreamId,
    pub upstream_model: String,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// Empty: every tenant.
    pub tenants: BTreeSet<TenantId>,
    pub exclusive: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: Vec<Model>,
    upstreams: Vec<Upstream>,
    /// Every spelling that names a model, folded (see [`fold`]).
    by_name: HashMap<String, ModelId>,
}

/// What an allowlist entry admits: a model by name, or every model with a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Model(ModelId),
    Tag(String, String),
}

/// The form a spelling is compared in: percent-decoded (once, as a URL path
/// segment would be), trimmed and lower-cased. A name that still holds `%`
/// or control characters after that is nobody's.
pub fn fold(spelled: &str) -> Option<String> {
    let decoded = percent_decode(spelled.trim())?;
    if decoded.is_empty()
        || decoded.chars().any(|c| c.is_control() || c == '%')
        || decoded.len() > 256
    {
        return None;
    }
    Some(decoded.to_lowercase())
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Catalog {
    /// Builds the catalog from validated config.
    pub fn new(config: &LlmConfig) -> Self {
        let mut catalog = Catalog::default();
        for (u, up) in config.upstreams.iter().enumerate() {
            catalog.upstreams.push(Upstream {
                name: up.name.clone(),
                tenants: up
                    .tenants
                    .iter()
                    .filter_map(|t| TenantId::parse(t).ok())
                    .collect(),
                exclusive: up.exclusive,
            });
            for entry in &up.models {
                let m = entry.config();
                let key = m.name().to_lowercase();
                let id = match catalog.by_name.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = ModelId(catalog.models.len());
                        catalog.models.push(Model {
                            name: m.name().to_owned(),
                            tags: Tags::new(),
                            fallbacks: Vec::new(),
                            deployments: Vec::new(),
                        });
                        catalog.by_name.insert(key, id);
                        id
                    }
                };
                let model = &mut catalog.models[id.0];
                if model.tags.is_empty() {
                    model.tags = m.tags.clone();
                }
                model.deployments.push(Deployment {
                    upstream: UpstreamId(u),
                    upstream_model: m.id.clone(),
                });
            }
        }
        // Upstream ids are spellings of their model too (config validation
        // made sure no id is another model's name).
        for (i, m) in catalog.models.clone().iter().enumerate() {
            for d in &m.deployments {
                catalog
                    .by_name
                    .entry(d.upstream_model.to_lowercase())
                    .or_insert(ModelId(i));
            }
        }
        for up in &config.upstreams {
            for entry in &up.models {
                let m = entry.config();
                let Some(id) = catalog.by_name.get(&m.name().to_lowercase()).copied() else {
                    continue;
                };
                if !catalog.models[id.0].fallbacks.is_empty() {
                    continue;
                }
                let fallbacks: Vec<ModelId> = m
                    .fallbacks
                    .iter()
                    .filter_map(|f| catalog.by_name.get(&f.to_lowercase()).copied())
                    .collect();
                catalog.models[id.0].fallbacks = fallbacks;
            }
        }
        catalog
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn models(&self) -> impl Iterator<Item = (ModelId, &Model)> {
        self.models.iter().enumerate().map(|(i, m)| (ModelId(i), m))
    }

    pub fn model(&self, id: ModelId) -> &Model {
        &self.models[id.0]
    }

    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        &self.upstreams[id.0]
    }

    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The model a client-written name means, whatever its spelling (alias
    /// or upstream id, any case, percent-encoded). `None` for a name no
    /// upstream serves: callers must answer it like a forbidden one.
    pub fn resolve(&self, spelled: &str) -> Option<ModelId> {
        self.by_name.get(&fold(spelled)?).copied()
    }

    /// The deployments that may carry `tenant`'s requests for `model`: its
    /// dedicated (exclusive) ones if it has any for this model — a tenant
    /// with provisioned capacity never shares the pool's — else the ones
    /// open to it. Empty: the tenant cannot reach the model.
    pub fn deployments_for(&self, model: ModelId, tenant: &TenantId) -> Vec<&Deployment> {
        let deployments = &self.models[model.0].deployments;
        let dedicated: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| {
                let u = &self.upstreams[d.upstream.0];
                u.exclusive && u.tenants.contains(tenant)
            })
            .collect();
        if !dedicated.is_empty() {
            return dedicated;
        }
        deployments
            .iter()
            .filter(|d| {
                let u = &self.upstreams[d.upstream.0];
                u.tenants.is_empty() || u.tenants.contains(tenant)
            })
            .collect()
    }

    /// Whether `tenant` may use `model` at all: some deployment is open to
    /// it, and the operator's allowlist (if any) admits it. A dedicated
    /// deployment's models are open only to its tenants.
    pub fn available(&self, model: ModelId, tenant: &TenantId, allow: Option<&[Allow]>) -> bool {
        if self.deployments_for(model, tenant).is_empty() {
            return false;
        }
        let Some(allow) = allow else {
            return true;
        };
        let m = &self.models[model.0];
        allow.iter().any(|a| match a {
            Allow::Model(id) => *id == model,
            Allow::Tag(k, v) => m.tags.get(k) == Some(v),
        })
    }

    /// A stored allowlist as it stands against today's config: an entry
    /// naming a model no upstream serves any more admits nothing.
    pub fn allowlist(&self, entries: &[String]) -> Vec<Allow> {
        entries
            .iter()
            .filter_map(|e| self.parse_allowlist(std::slice::from_ref(e)).ok())
            .flatten()
            .collect()
    }

    /// Parses an operator's allowlist: model names (any spelling) or
    /// `Key=Value` tag matches. An entry naming nothing is an error, so a
    /// typo cannot silently allow less (or, later, more) than meant.
    pub fn parse_allowlist(&self, entries: &[String]) -> Result<Vec<Allow>, String> {
        entries
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    Ok(Allow::Tag(k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => self
                    .resolve(e)
                    .map(Allow::Model)
                    .ok_or_else(|| format!("llm_models: {e:?} is served by no upstream")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn catalog() -> Catalog {
        let config: LlmConfig = toml::from_str(
            r#"
            [[upstreams]]
            name = "pool-a"
            url = "http://a/v1"
            models = [{ id = "org/Small-1", alias = "small", tags = { Size = "small" } }, { id = "big", tags = { Size = "large" }, fallbacks = ["small"] }]
            [[upstreams]]
            name = "pool-b"
            url = "http://b/v1"
            models = [{ id = "org/Small-1", alias = "small" }]
            [[upstreams]]
            name = "acme-dedicated"
            url = "http://c/v1"
            tenants = ["acme"]
            exclusive = true
            models = [{ id = "org/Small-1", alias = "small" }, "acme-tuned"]
            "#,
        )
        .unwrap();
        Catalog::new(&config)
    }

    #[test]
    fn every_spelling_names_the_same_model() {
        let c = catalog();
        let small = c.resolve("small").unwrap();
        for s in [
            "SMALL",
            " small ",
            "org/small-1",
            "org%2FSmall-1",
            "%73mall",
        ] {
            assert_eq!(c.resolve(s), Some(small), "{s}");
        }
        for s in ["acme/small", "small%", "%zz", "sm\u{0}all", ""] {
            assert_eq!(c.resolve(s), None, "{s}");
        }
        assert_eq!(c.model(c.resolve("big").unwrap()).fallbacks, vec![small]);
    }

    #[test]
    fn dedicated_capacity_is_its_tenants_alone() {
        let c = catalog();
        let small = c.resolve("small").unwrap();
        let tuned = c.resolve("acme-tuned").unwrap();
        let acme: Vec<_> = c.deployments_for(small, &t("acme"));
        assert_eq!(acme.len(), 1);
        assert_eq!(c.upstream(acme[0].upstream).name, "acme-dedicated");
        let other = c.deployments_for(small, &t("globex"));
        assert_eq!(other.len(), 2);
        assert!(other
            .iter()
            .all(|d| c.upstream(d.upstream).name.starts_with("pool")));
        assert!(c.available(tuned, &t("acme"), None));
        assert!(!c.available(tuned, &t("globex"), None));
    }

    #[test]
    fn allowlists_narrow_by_name_or_tag() {
        let c = catalog();
        let small = c.resolve("small").unwrap();
        let big = c.resolve("big").unwrap();
        let by_name = c.parse_allowlist(&["Small".into()]).unwrap();
        assert!(c.available(small, &t("globex"), Some(&by_name)));
        assert!(!c.available(big, &t("globex"), Some(&by_name)));
        let by_tag = c.parse_allowlist(&["Size=large".into()]).unwrap();
        assert!(c.available(big, &t("globex"), Some(&by_tag)));
        assert!(!c.available(small, &t("globex"), Some(&by_tag)));
        assert!(!c.available(big, &t("globex"), Some(&[])));
        assert!(c.parse_allowlist(&["nothing".into()]).is_err());
    }
}
