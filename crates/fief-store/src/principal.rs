//! The authenticated principal (invariant 1). A [`Principal`] has no public
//! constructor: `authn.rs` makes one only after verifying a credential (an
//! API key by its hash, a session token by fief's signature, an OIDC token
//! by the identity provider's), and only for a tenant incarnation that is
//! active. The gate (`gate.rs`) turns an allowed decision on a principal
//! into the tenant scope storage requires, so no code outside this crate
//! can reach a tenant's data without that tenant's credential.
//!
//! A struct literal does not compile outside this module:
//!
//! ```compile_fail,E0451
//! let facts = fief_policy::PrincipalFacts::Operator;
//! let p = fief_store::Principal { facts, hypothetical: false };
//! ```
//!
//! and neither does the crate's own constructor:
//!
//! ```compile_fail,E0624
//! let p = fief_store::Principal::from_facts(fief_policy::PrincipalFacts::Operator);
//! ```

use fief_core::{Incarnation, Tags, TenantId};
use fief_policy::{PrincipalFacts, SessionFacts};

/// Who is asking, as a verified credential established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    facts: PrincipalFacts,
    /// A principal described for `policies/explain`: decisions on it are
    /// evaluated but grant no scope.
    hypothetical: bool,
}

impl Principal {
    /// Only `authn.rs` calls this, after verification.
    pub(crate) fn from_facts(facts: PrincipalFacts) -> Self {
        Self {
            facts,
            hypothetical: false,
        }
    }

    pub fn facts(&self) -> &PrincipalFacts {
        &self.facts
    }
    pub fn tenant(&self) -> Option<&TenantId> {
        self.facts.tenant()
    }
    pub fn incarnation(&self) -> Option<&Incarnation> {
        self.facts.incarnation()
    }
    pub fn is_operator(&self) -> bool {
        matches!(self.facts, PrincipalFacts::Operator)
    }
    pub fn is_hypothetical(&self) -> bool {
        self.hypothetical
    }
    pub fn audit_name(&self) -> String {
        self.facts.audit_name()
    }
    pub fn source(&self) -> Option<String> {
        self.facts.source()
    }

    /// A session of `role` in this principal's own tenant, with `tags`, to
    /// explain a decision for. Grants nothing (see `hypothetical`).
    pub fn hypothetical_session(&self, role: &str, tags: Tags) -> Option<Principal> {
        let (tenant, incarnation) = (self.tenant()?, self.incarnation()?);
        Some(Self {
            facts: PrincipalFacts::Session(SessionFacts {
                tenant: tenant.clone(),
                incarnation: incarnation.clone(),
                role: role.to_owned(),
                session_name: "explain".into(),
                tags,
                source_tenant: tenant.clone(),
                source_principal: self.audit_name(),
            }),
            hypothetical: true,
        })
    }

    /// A signed-in user of this principal's own tenant, to explain a
    /// decision for. Grants nothing.
    pub fn hypothetical_user(&self, subject: &str, tags: Tags) -> Option<Principal> {
        let (tenant, incarnation) = (self.tenant()?, self.incarnation()?);
        Some(Self {
            facts: PrincipalFacts::User {
                subject: subject.to_owned(),
                tenant: tenant.clone(),
                incarnation: incarnation.clone(),
                tags,
            },
            hypothetical: true,
        })
    }

    /// An existing key of this principal's own tenant (looked up by the
    /// store), to explain a decision for. Grants nothing.
    pub(crate) fn hypothetical_key(
        &self,
        key_id: String,
        role: Option<String>,
        tags: Tags,
    ) -> Option<Principal> {
        let (tenant, incarnation) = (self.tenant()?, self.incarnation()?);
        Some(Self {
            facts: PrincipalFacts::ApiKey {
                key_id,
                tenant: tenant.clone(),
                incarnation: incarnation.clone(),
                role,
                tags,
            },
            hypothetical: true,
        })
    }
}
