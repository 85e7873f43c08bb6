//! Core types shared by every fief crate: validated identifiers, tiers and
//! resource addressing. Pure and synchronous; no I/O.

pub mod civil;
pub mod words;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier or address was rejected. The message is shown to clients,
/// so it names the rule that was broken, never anything about other tenants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{what} must be {rule}")]
    Invalid {
        what: &'static str,
        rule: &'static str,
    },
}

const TENANT_RULE: &str =
    "2 to 63 characters of lowercase a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const MODEL_RULE: &str =
    "1 to 128 characters of a-z, A-Z, 0-9, '-', '_' and '.', starting with a letter or digit, without '..'";

/// Tenant id: a lowercase DNS-label-like slug. It appears in endpoint paths,
/// object keys and database names, so the alphabet is deliberately narrow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let b = s.as_bytes();
        let ok = (2..=63).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok && !RESERVED_TENANT_IDS.contains(&s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(CoreError::Invalid {
                what: "tenant id",
                rule: TENANT_RULE,
            })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names that would collide with fixed routes or endpoints.
const RESERVED_TENANT_IDS: &[&str] = &["shared", "admin", "api", "system", "fief"];

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One incarnation of a tenant: an immutable random id (32 lowercase hex)
/// made at onboarding. Tenant ids may be reused after offboarding; every
/// credential, cache entry and data key belongs to one incarnation, so
/// nothing of an offboarded tenant reaches a later one with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Incarnation(String);

impl Incarnation {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(CoreError::Invalid {
                what: "tenant incarnation",
                rule: "32 lowercase hex characters",
            })
        }
    }
    /// A new incarnation from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Incarnation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a name inside a tenant's namespace (models, roles, policies).
pub fn parse_name(what: &'static str, s: &str) -> Result<String, CoreError> {
    let b = s.as_bytes();
    let ok = (1..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && !s.contains("..")
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(CoreError::Invalid {
            what,
            rule: MODEL_RULE,
        })
    }
}

/// A model's name inside its tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        parse_name("model name", s).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Isolation tier (DESIGN.md): decides placement on every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Silo,
    Bridge,
    Pool,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Silo => "silo",
            Tier::Bridge => "bridge",
            Tier::Pool => "pool",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "silo" => Ok(Tier::Silo),
            "bridge" => Ok(Tier::Bridge),
            "pool" => Ok(Tier::Pool),
            _ => Err(CoreError::Invalid {
                what: "tier",
                rule: "one of silo, bridge, pool",
            }),
        }
    }
}

/// A reference to a model as a client wrote it, resolved to (owner, name).
///
/// Accepted forms: `name` (the caller's own namespace), `tenant/name`, and the
/// fief resource name `frn:fief:model:tenant/name`. The owner named here is only
/// a claim: the authorisation layer decides whether the caller may touch it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub owner: TenantId,
    pub name: ModelName,
}

impl ModelRef {
    pub fn parse(raw: &str, caller: &TenantId) -> Result<Self, CoreError> {
        let (owner, name) = split_qualified(
            raw,
            FRN_MODEL_PREFIX,
            caller,
            (
                "model resource name",
                "of the form frn:fief:model:<tenant>/<model>",
            ),
        )?;
        Ok(Self {
            owner,
            name: ModelName::parse(name)?,
        })
    }

    /// The canonical fief resource name.
    pub fn frn(&self) -> String {
        format!("{FRN_MODEL_PREFIX}{}/{}", self.owner, self.name)
    }
}

const FRN_MODEL_PREFIX: &str = "frn:fief:model:";
const FRN_ROLE_PREFIX: &str = "frn:fief:role:";
const FRN_KB_PREFIX: &str = "frn:fief:knowledge-base:";
const FRN_TABLE_PREFIX: &str = "frn:fief:table:";

/// Splits `name`, `tenant/name` or `<frn prefix>tenant/name` into the
/// claimed owner (the caller when unqualified) and the bare name.
fn split_qualified<'a>(
    raw: &'a str,
    frn_prefix: &str,
    caller: &TenantId,
    (what, rule): (&'static str, &'static str),
) -> Result<(TenantId, &'a str), CoreError> {
    let qualified = raw.strip_prefix(frn_prefix).unwrap_or(raw);
    match qualified.split_once('/') {
        None if qualified.len() == raw.len() => Ok((caller.clone(), raw)),
        None => Err(CoreError::Invalid { what, rule }),
        Some((owner, name)) => Ok((TenantId::parse(owner)?, name)),
    }
}

/// A role as a client wrote it: `name` (own tenant), `tenant/name` or
/// `frn:fief:role:tenant/name`. Roles are the one resource a principal may
/// address in another tenant (to assume it, as its trust policy allows).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleRef {
    pub owner: TenantId,
    pub name: String,
}

impl RoleRef {
    pub fn parse(raw: &str, caller: &TenantId) -> Result<Self, CoreError> {
        let (owner, name) = split_qualified(
            raw,
            FRN_ROLE_PREFIX,
            caller,
            (
                "role resource name",
                "of the form frn:fief:role:<tenant>/<role>",
            ),
        )?;
        Ok(Self {
            owner,
            name: parse_name("role name", name)?,
        })
    }

    pub fn frn(&self) -> String {
        format!("{FRN_ROLE_PREFIX}{}/{}", self.owner, self.name)
    }
}

/// A knowledge base as a client wrote it: `name`, `tenant/name` or
/// `frn:fief:knowledge-base:tenant/name`. Only the caller's own are ever
/// reachable; the other forms exist so that a cross-tenant address is a
/// clean 403 rather than a parse error that would reveal nothing either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KbRef {
    pub owner: TenantId,
    pub name: String,
}

impl KbRef {
    pub fn parse(raw: &str, caller: &TenantId) -> Result<Self, CoreError> {
        let (owner, name) = split_qualified(
            raw,
            FRN_KB_PREFIX,
            caller,
            (
                "knowledge base resource name",
                "of the form frn:fief:knowledge-base:<tenant>/<name>",
            ),
        )?;
        Ok(Self {
            owner,
            name: parse_name("knowledge base name", name)?,
        })
    }

    pub fn frn(&self) -> String {
        format!("{FRN_KB_PREFIX}{}/{}", self.owner, self.name)
    }
}

/// A tenant table as a client wrote it: `name`, `tenant/name` or
/// `frn:fief:table:tenant/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub owner: TenantId,
    pub name: String,
}

impl TableRef {
    pub fn parse(raw: &str, caller: &TenantId) -> Result<Self, CoreError> {
        let (owner, name) = split_qualified(
            raw,
            FRN_TABLE_PREFIX,
            caller,
            (
                "table resource name",
                "of the form frn:fief:table:<tenant>/<table>",
            ),
        )?;
        Ok(Self {
            owner,
            name: parse_name("table name", name)?,
        })
    }

    pub fn frn(&self) -> String {
        format!("{FRN_TABLE_PREFIX}{}/{}", self.owner, self.name)
    }
}

/// An item key in a tenant table: 1–1024 bytes of text without control
/// characters (`/`, spaces and any other printable text allowed).
pub fn parse_item_key(s: &str) -> Result<String, CoreError> {
    if (1..=1024).contains(&s.len()) && !s.chars().any(char::is_control) {
        Ok(s.to_owned())
    } else {
        Err(CoreError::Invalid {
            what: "item key",
            rule: "1-1024 bytes of text without control characters",
        })
    }
}

/// A document's id inside a knowledge base: 1–256 characters of letters,
/// digits and `-_.~/`, no empty or `..` segment, so a file's relative path
/// can be its id.
pub fn parse_document_id(s: &str) -> Result<String, CoreError> {
    let ok = (1..=256).contains(&s.len())
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'/'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(CoreError::Invalid {
            what: "document id",
            rule:
                "1-256 characters of letters, digits and -_.~/ with no empty, . or .. path segment",
        })
    }
}

/// Tenant tags (e.g. `CostCenter=cc-100`): operator metadata used for
/// billing and attribute-based policies. Bounded so they stay metadata.
pub type Tags = std::collections::BTreeMap<String, String>;

pub const MAX_TAGS: usize = 50;

pub fn validate_tags(tags: &Tags) -> Result<(), CoreError> {
    if tags.len() > MAX_TAGS {
        return Err(CoreError::Invalid {
            what: "tags",
            rule: "at most 50 entries",
        });
    }
    for (k, v) in tags {
        let key_ok = (1..=128).contains(&k.len())
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.:/=+-@".contains(&c));
        if !key_ok {
            return Err(CoreError::Invalid {
                what: "tag key",
                rule: "1 to 128 characters of letters, digits and _.:/=+-@",
            });
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(CoreError::Invalid {
                what: "tag value",
                rule: "at most 256 characters without control characters",
            });
        }
    }
    Ok(())
}

/// One input or output of a model, as the serving layer found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    /// Dimensions; symbolic ones (a batch size, say) by their symbol.
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        for ok in ["hr", "sales-eu", "t1", "a0-b"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "HR",
            "1abc",
            "ab-",
            "a_b",
            "a/b",
            "..",
            "shared",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_names() {
        for ok in ["m", "attrition", "v1.2_final-x", &"a".repeat(128)] {
            assert!(ModelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "a..b",
            ".hidden",
            "a/b",
            "a\0b",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn model_refs() {
        let me = TenantId::parse("aa").unwrap();
        let r = ModelRef::parse("m1", &me).unwrap();
        assert_eq!((r.owner.as_str(), r.name.as_str()), ("aa", "m1"));
        let r = ModelRef::parse("bb/m1", &me).unwrap();
        assert_eq!(r.owner.as_str(), "bb");
        let r = ModelRef::parse("frn:fief:model:bb/m1", &me).unwrap();
        assert_eq!(
            (r.owner.as_str(), r.frn().as_str()),
            ("bb", "frn:fief:model:bb/m1")
        );
        for bad in [
            "../bb/m1",
            "bb/../m1",
            "bb/m1/x",
            "frn:fief:model:m1",
            "BB/m1",
            "/m1",
            "bb/",
        ] {
            assert!(ModelRef::parse(bad, &me).is_err(), "{bad}");
        }
    }
}
