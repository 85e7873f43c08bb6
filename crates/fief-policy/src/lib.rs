//! Authorisation (invariant 2) and the tenant scope capability (invariant 3).
//!
//! Every request is decided by Cedar against the platform policies in
//! `platform.cedar` plus, for a tenant's principals, that tenant's own
//! policies and (for scoped keys and sessions) its role's policies, all under
//! the strict schema in `schema.cedarschema`. Entities are built here from
//! facts the caller got from a verified credential and the store, and from the
//! resource's address; nothing from a request body reaches a principal
//! attribute. An evaluation error is a deny (invariant 9).
//!
//! Tenant policy sets are compiled once per change and kept per tenant, so a
//! decision evaluates the platform policies plus one tenant's, whatever the
//! number of tenants.
//!
//! A decision here is a [`Verdict`] on [`PrincipalFacts`]: it grants
//! nothing by itself. The gate in fief-store evaluates the facts of an
//! authenticated `Principal` (which only a verified credential can make)
//! and turns an allow into the `TenantScope` storage requires.

mod document;
#[cfg(feature = "fault-injection")]
pub mod faults;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use subtle::ConstantTimeEq;

use fief_core::{Incarnation, KbRef, ModelRef, RoleRef, TableRef, Tags, TenantId};

pub use document::{line_column, DocumentErrors, Problem, MAX_DOCUMENT_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("platform schema does not parse: {0}")]
    Schema(String),
    #[error("platform policy {id} does not parse: {message}")]
    Parse { id: String, message: String },
    #[error("platform policies do not validate against the schema: {0}")]
    Invalid(String),
    #[error("{0}")]
    Document(#[from] DocumentErrors),
}

pub(crate) const SCHEMA: &str = include_str!("schema.cedarschema");
const PLATFORM_POLICIES: &str = include_str!("platform.cedar");

/// The id of the cross-tenant guardrail, as it appears in audit entries.
pub const GUARDRAIL_ID: &str = "platform-guardrail";
/// The id of the guardrail on assuming another tenant's role.
pub const ASSUME_ROLE_GUARDRAIL_ID: &str = "assume-role-guardrail";
/// Forbids a foundation model to every tenant the deployment does not give it to.
pub const FOUNDATION_MODEL_GUARDRAIL_ID: &str = "foundation-model-guardrail";

/// Who is asking, as facts for one decision. Anyone may build these: a
/// decision on them grants nothing by itself. The authenticated principal
/// that storage trusts (and that the gate turns into a tenant scope) is
/// `fief_store::Principal`, made only from a verified credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrincipalFacts {
    /// An API key; `role` is set for a scoped key.
    ApiKey {
        key_id: String,
        tenant: TenantId,
        incarnation: Incarnation,
        role: Option<String>,
        /// Tags the operator gave the key (`principal.getTag(...)`).
        tags: Tags,
    },
    /// A user signed in through the OIDC identity provider.
    User {
        subject: String,
        tenant: TenantId,
        incarnation: Incarnation,
        tags: Tags,
    },
    Session(SessionFacts),
    Operator,
}

/// A role session, as its verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionFacts {
    /// The role's tenant: the session acts there.
    pub tenant: TenantId,
    pub incarnation: Incarnation,
    pub role: String,
    pub session_name: String,
    pub tags: Tags,
    pub source_tenant: TenantId,
    /// The audit name of the principal that assumed the role.
    pub source_principal: String,
}

impl PrincipalFacts {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            PrincipalFacts::ApiKey { tenant, .. } | PrincipalFacts::User { tenant, .. } => {
                Some(tenant)
            }
            PrincipalFacts::Session(s) => Some(&s.tenant),
            PrincipalFacts::Operator => None,
        }
    }
    pub fn incarnation(&self) -> Option<&Incarnation> {
        match self {
            PrincipalFacts::ApiKey { incarnation, .. }
            | PrincipalFacts::User { incarnation, .. } => Some(incarnation),
            PrincipalFacts::Session(s) => Some(&s.incarnation),
            PrincipalFacts::Operator => None,
        }
    }
    /// The tags Cedar sees on the principal.
    pub fn tags(&self) -> Option<&Tags> {
        match self {
            PrincipalFacts::ApiKey { tags, .. } | PrincipalFacts::User { tags, .. } => Some(tags),
            PrincipalFacts::Session(s) => Some(&s.tags),
            PrincipalFacts::Operator => None,
        }
    }
    /// Stable text for audit entries.
    pub fn audit_name(&self) -> String {
        match self {
            PrincipalFacts::ApiKey { key_id, .. } => format!("api-key:{key_id}"),
            PrincipalFacts::User {
                subject, tenant, ..
            } => format!("user:{tenant}/{subject}"),
            PrincipalFacts::Session(s) => {
                format!("session:{}/{}/{}", s.tenant, s.role, s.session_name)
            }
            PrincipalFacts::Operator => "operator".into(),
        }
    }
    /// For a session, who assumed it (audit entries carry it).
    pub fn source(&self) -> Option<String> {
        match self {
            PrincipalFacts::Session(s) => {
                Some(format!("{} ({})", s.source_principal, s.source_tenant))
            }
            _ => None,
        }
    }
}

/// What is being touched, as addressed by the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Tenant(TenantId),
    Model(ModelRef),
    Endpoint(TenantId),
    Policy {
        tenant: TenantId,
        id: String,
    },
    Role(RoleRef),
    KnowledgeBase(KbRef),
    Table(TableRef),
    /// A foundation model by the name tenants see; `available_to` is the
    /// caller's tenant when the deployment lets it use the model.
    FoundationModel {
        name: String,
        available_to: Option<TenantId>,
    },
    SharedEndpoint,
    Platform,
}

impl Resource {
    /// The tenant that owns this resource, if any.
    pub fn owner(&self) -> Option<&TenantId> {
        match self {
            Resource::Tenant(t) | Resource::Endpoint(t) => Some(t),
            Resource::Policy { tenant, .. } => Some(tenant),
            Resource::Model(m) => Some(&m.owner),
            Resource::Role(r) => Some(&r.owner),
            Resource::KnowledgeBase(kb) => Some(&kb.owner),
            Resource::Table(t) => Some(&t.owner),
            Resource::SharedEndpoint | Resource::Platform | Resource::FoundationModel { .. } => {
                None
            }
        }
    }
    /// Stable text for audit entries (a fief resource name).
    pub fn frn(&self) -> String {
        match self {
            Resource::Tenant(t) => format!("frn:fief:tenant:{t}"),
            Resource::Model(m) => m.frn(),
            Resource::Endpoint(t) => format!("frn:fief:endpoint:{t}"),
            Resource::Policy { tenant, id } => format!("frn:fief:policy:{tenant}/{id}"),
            Resource::Role(r) => r.frn(),
            Resource::KnowledgeBase(kb) => kb.frn(),
            Resource::Table(t) => t.frn(),
            Resource::FoundationModel { name, .. } => format!("frn:fief:foundation-model:{name}"),
            Resource::SharedEndpoint => "frn:fief:endpoint:shared".into(),
            Resource::Platform => "frn:fief:platform".into(),
        }
    }
}

/// Attributes of the resource read from the store (only ever for the
/// caller's own tenant): its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceAttrs {
    pub tags: Tags,
}

macro_rules! actions {
    ($($name:ident),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action { $($name),* }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$name),*];
            pub fn name(self) -> &'static str {
                match self { $(Action::$name => stringify!($name)),* }
            }
        }

        impl FromStr for Action {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $(stringify!($name) => Ok(Action::$name),)*
                    _ => Err(format!("unknown action `{s}`")),
                }
            }
        }
    };
}

actions!(
    InvokeEndpoint,
    InvokeSharedEndpoint,
    InvokeFoundationModel,
    ListFoundationModels,
    InvokeModel,
    PutModel,
    GetModel,
    DeleteModel,
    TagModel,
    ListModels,
    GetIdentity,
    PutPolicy,
    GetPolicy,
    DeletePolicy,
    ListPolicies,
    ExplainPolicy,
    PutRole,
    GetRole,
    DeleteRole,
    ListRoles,
    AssumeRole,
    TagSession,
    CreateKnowledgeBase,
    GetKnowledgeBase,
    DeleteKnowledgeBase,
    PutDocument,
    DeleteDocument,
    QueryKnowledgeBase,
    ListKnowledgeBases,
    CreateEmbeddings,
    GetQuotas,
    SetQuota,
    GetUsage,
    ReadLogs,
    DeleteLogs,
    ConfigureLogs,
    PutItem,
    GetItem,
    DeleteItem,
    ListItems,
    CreateTenant,
    GetTenant,
    UpdateTenant,
    DeleteTenant,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
    ListTenants,
    ReadAudit,
    ReadUsage,
    RotateSigningKey,
    VerifyIsolation,
);

/// The result of one evaluation, allow or deny, with what decided it. It
/// grants nothing by itself: the gate in fief-store turns the allow of an
/// authenticated principal into a tenant scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Why a deny happened when no policy names it (default deny, errors).
    pub reason: Option<String>,
}

impl Verdict {
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            reason: Some(reason.into()),
        }
    }
}

/// One session tag asked for in an assume-role request, and whether the
/// role's trust policy permits it (`TagSession`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagVerdict {
    pub key: String,
    pub value: String,
    pub allowed: bool,
    pub policies: Vec<String>,
}

/// The decision on an assume-role request: the trust decision, and each
/// requested tag's. `verdict.allowed` holds only if every tag was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleVerdict {
    pub verdict: Verdict,
    pub tags: Vec<TagVerdict>,
}

/// A role as the tenant wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDocument {
    pub name: String,
    pub trust_policy: String,
    pub policies: Vec<String>,
    pub external_id: Option<String>,
}

/// Everything a tenant wrote: its policy documents (id, text) and roles.
#[derive(Debug, Clone, Default)]
pub struct TenantDocuments {
    pub policies: Vec<(String, String)>,
    pub roles: Vec<RoleDocument>,
}

/// A tenant's policies, compiled and ready to evaluate.
pub struct CompiledTenant {
    /// Platform policies plus the tenant's own.
    base: PolicySet,
    roles: HashMap<String, CompiledRole>,
    /// Whether the tenant wrote anything; if not, only platform policies
    /// apply and no resource attribute can matter.
    has_documents: bool,
    /// Decisions already made with exactly these policies, which go away
    /// with them when the tenant's documents change.
    decisions: Decisions,
}

/// Verdicts by their inputs. A decision is a pure function of the policy
/// set and of the facts, action, resource and attributes it was asked
/// about, so one made once holds until the policy set changes.
#[derive(Default)]
struct Decisions {
    by_hash: RwLock<HashMap<u64, Vec<Remembered>>>,
}

struct Remembered {
    principal: PrincipalFacts,
    action: Action,
    resource: Resource,
    attrs: ResourceAttrs,
    verdict: Verdict,
}

/// Most decisions remembered per policy set; past it the memory starts over.
const MAX_REMEMBERED: usize = 4096;

impl Decisions {
    fn key(
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
    ) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        principal.hash(&mut h);
        action.hash(&mut h);
        resource.hash(&mut h);
        attrs.hash(&mut h);
        h.finish()
    }

    fn get(
        &self,
        key: u64,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
    ) -> Option<Verdict> {
        let map = self.by_hash.read().ok()?;
        map.get(&key)?
            .iter()
            .find(|r| {
                r.action == action
                    && &r.principal == principal
                    && &r.resource == resource
                    && &r.attrs == attrs
            })
            .map(|r| r.verdict.clone())
    }

    fn put(
        &self,
        key: u64,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
        verdict: &Verdict,
    ) {
        let Ok(mut map) = self.by_hash.write() else {
            return;
        };
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.entry(key).or_default().push(Remembered {
            principal: principal.clone(),
            action,
            resource: resource.clone(),
            attrs: attrs.clone(),
            verdict: verdict.clone(),
        });
    }
}

impl CompiledTenant {
    /// Whether the tenant wrote any policy or role (if not, no resource
    /// attribute can matter to a decision).
    pub fn has_documents(&self) -> bool {
        self.has_documents
    }
}

struct CompiledRole {
    /// Platform, tenant and role policies: what a session or scoped key may do.
    permissions: PolicySet,
    /// Platform policies and the trust policy: who may assume the role.
    trust: PolicySet,
    /// Ids of the trust statements and the tenants each names in its principal scope.
    trust_scopes: HashMap<String, Option<TenantId>>,
    external_id: Option<String>,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    /// Compiled for one incarnation of the tenant id.
    compiled: Option<(Incarnation, Arc<CompiledTenant>)>,
}

pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
    tenants: RwLock<HashMap<TenantId, Slot>>,
    /// Decisions on the platform policies alone (the operator's).
    platform_decisions: Decisions,
    /// Per action, what the schema says once (at start-up) instead of on
    /// every request: its entity with its groups, and which principal and
    /// resource types it applies to.
    actions: HashMap<Action, ActionFacts>,
}

/// What a request needs from the schema for one action.
struct ActionFacts {
    uid: EntityUid,
    /// The action's entity and its groups' (for `action in ...`).
    entities: Vec<Entity>,
    principals: HashSet<String>,
    resources: HashSet<String>,
}

impl PolicyEngine {
    /// Parses the schema and the platform policies and validates them strictly;
    /// start-up fails if they do not.
    pub fn new() -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let mut policies = PolicySet::new();
        for block in policy_blocks(PLATFORM_POLICIES) {
            let id = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("// id:"))
                .map(str::trim)
                .ok_or_else(|| PolicyError::Parse {
                    id: "?".into(),
                    message: "missing `// id:` line".into(),
                })?;
            let policy =
                Policy::parse(Some(PolicyId::new(id)), &block).map_err(|e| PolicyError::Parse {
                    id: id.into(),
                    message: e.to_string(),
                })?;
            policies.add(policy).map_err(|e| PolicyError::Parse {
                id: id.into(),
                message: e.to_string(),
            })?;
        }
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(PolicyError::Invalid(errors.join("; ")));
        }
        let actions = action_facts(&schema)?;
        Ok(Self {
            schema,
            policies,
            authorizer: Authorizer::new(),
            tenants: RwLock::new(HashMap::new()),
            platform_decisions: Decisions::default(),
            actions,
        })
    }

    // ---- tenant documents ------------------------------------------------

    /// Checks one tenant policy document (for `PUT /policies/{id}` and
    /// `fief policy validate`).
    pub fn validate_policy(&self, id: &str, text: &str) -> Result<(), DocumentErrors> {
        document::parse(&self.schema, &policy_id(id), text).map(|_| ())
    }

    /// Checks a role's trust policy and permission policies.
    pub fn validate_role(&self, role: &RoleDocument) -> Result<(), DocumentErrors> {
        self.compile_role(role, &PolicySet::new()).map(|_| ())
    }

    /// Compiles what a tenant wrote. Documents were validated when written;
    /// one that no longer validates (a schema change) fails the whole tenant
    /// closed rather than being skipped.
    pub fn compile_tenant(&self, docs: &TenantDocuments) -> Result<CompiledTenant, PolicyError> {
        let mut base = self.policies.clone();
        let mut own = PolicySet::new();
        for (id, text) in &docs.policies {
            for p in document::parse(&self.schema, &policy_id(id), text)? {
                add(&mut base, p.clone())?;
                add(&mut own, p)?;
            }
        }
        let mut roles = HashMap::new();
        for role in &docs.roles {
            roles.insert(role.name.clone(), self.compile_role(role, &own)?);
        }
        Ok(CompiledTenant {
            base,
            roles,
            has_documents: !docs.policies.is_empty() || !docs.roles.is_empty(),
            decisions: Decisions::default(),
        })
    }

    fn compile_role(
        &self,
        role: &RoleDocument,
        tenant_policies: &PolicySet,
    ) -> Result<CompiledRole, DocumentErrors> {
        let in_part = |part: String| {
            move |e: DocumentErrors| {
                DocumentErrors(
                    e.0.into_iter()
                        .map(|p| Problem {
                            message: format!("{part}: {}", p.message),
                            ..p
                        })
                        .collect(),
                )
            }
        };
        let mut permissions = self.policies.clone();
        for p in tenant_policies.policies() {
            add(&mut permissions, p.clone())?;
        }
        for (i, text) in role.policies.iter().enumerate() {
            let prefix = format!("role/{}/{}", role.name, i + 1);
            for p in document::parse(&self.schema, &prefix, text)
                .map_err(in_part(format!("policies[{i}]")))?
            {
                add(&mut permissions, p)?;
            }
        }
        let mut trust = self.policies.clone();
        let mut trust_scopes = HashMap::new();
        let prefix = format!("role/{}/trust", role.name);
        for p in document::parse(&self.schema, &prefix, &role.trust_policy)
            .map_err(in_part("trust_policy".into()))?
        {
            trust_scopes.insert(p.id().to_string(), named_tenant(&p));
            add(&mut trust, p)?;
        }
        Ok(CompiledRole {
            permissions,
            trust,
            trust_scopes,
            external_id: role.external_id.clone(),
        })
    }

    // ---- the per-tenant cache ---------------------------------------------

    /// The generation to pass to [`install`](Self::install) after loading.
    pub fn generation(&self, tenant: &TenantId) -> u64 {
        self.tenants
            .read()
            .map(|t| t.get(tenant).map_or(0, |s| s.generation))
            .unwrap_or(0)
    }

    /// Whether `incarnation`'s policies are loaded (another incarnation's
    /// with the same tenant id do not count).
    pub fn is_loaded(&self, tenant: &TenantId, incarnation: &Incarnation) -> bool {
        self.compiled(tenant, incarnation).is_some()
    }

    /// `incarnation`'s compiled policies, if they are loaded.
    pub fn loaded(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Option<Arc<CompiledTenant>> {
        self.compiled(tenant, incarnation)
    }

    /// Installs a compiled tenant unless it changed since `generation` was
    /// read (a load racing a write must not install stale policies).
    /// Returns the compiled set either way: the request that loaded it may
    /// decide with it, since it read the documents after it began.
    pub fn install(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
        generation: u64,
        compiled: CompiledTenant,
    ) -> Arc<CompiledTenant> {
        let compiled = Arc::new(compiled);
        if let Ok(mut tenants) = self.tenants.write() {
            let slot = tenants.entry(tenant.clone()).or_default();
            if slot.generation == generation {
                slot.compiled = Some((incarnation.clone(), compiled.clone()));
            }
        }
        compiled
    }

    /// Drops a tenant's compiled policies after a change (or offboarding).
    pub fn invalidate(&self, tenant: &TenantId) {
        if let Ok(mut tenants) = self.tenants.write() {
            let slot = tenants.entry(tenant.clone()).or_default();
            slot.generation += 1;
            slot.compiled = None;
        }
    }

    fn compiled(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Option<Arc<CompiledTenant>> {
        self.tenants.read().ok().and_then(|t| {
            t.get(tenant).and_then(|s| match &s.compiled {
                Some((inc, c)) if inc == incarnation => Some(c.clone()),
                _ => None,
            })
        })
    }

    // ---- decisions ---------------------------------------------------------

    /// Decides one request without resource attributes.
    pub fn authorize(
        &self,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
    ) -> Verdict {
        self.authorize_with(principal, action, resource, &ResourceAttrs::default())
    }

    /// Decides one request with the loaded policies of the principal's
    /// tenant. Never errors: anything that goes wrong while building or
    /// evaluating the request is a deny with a reason.
    pub fn authorize_with(
        &self,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
    ) -> Verdict {
        let compiled = principal
            .tenant()
            .zip(principal.incarnation())
            .and_then(|(t, i)| self.compiled(t, i));
        self.authorize_in(compiled.as_deref(), principal, action, resource, attrs)
    }

    /// [`authorize_with`](Self::authorize_with) with the principal's
    /// tenant's compiled policies given (`None`: not loaded, a deny).
    pub fn authorize_in(
        &self,
        compiled: Option<&CompiledTenant>,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
    ) -> Verdict {
        if matches!(action, Action::AssumeRole | Action::TagSession) {
            return Verdict::deny("AssumeRole is decided by the role's trust policy");
        }
        let (policies, memory) = match principal.tenant() {
            Some(tenant) => {
                let Some(compiled) = compiled else {
                    return Verdict::deny(format!("policies of tenant {tenant} are not loaded"));
                };
                let policies = match principal_role(principal) {
                    None => &compiled.base,
                    Some(role) => match compiled.roles.get(role) {
                        Some(r) => &r.permissions,
                        None => return Verdict::deny(format!("role {role} no longer exists")),
                    },
                };
                (policies, &compiled.decisions)
            }
            None => (&self.policies, &self.platform_decisions),
        };
        #[cfg(feature = "fault-injection")]
        if faults::guardrail_skipped() {
            // A switched-off layer is never remembered.
            return verdict(self.evaluate(
                policies,
                principal,
                action,
                resource,
                attrs,
                &RequestContext::None,
            ));
        }
        let key = Decisions::key(principal, action, resource, attrs);
        if let Some(v) = memory.get(key, principal, action, resource, attrs) {
            return v;
        }
        let v = verdict(self.evaluate(
            policies,
            principal,
            action,
            resource,
            attrs,
            &RequestContext::None,
        ));
        memory.put(key, principal, action, resource, attrs, &v);
        v
    }

    /// Decides whether `principal` may assume `role` (of the incarnation
    /// `owner` of the role's tenant), by the role's trust policy under the
    /// platform guardrails, and whether each requested session tag is
    /// permitted (`TagSession`, decided per tag with `context.key` and
    /// `context.value`; no tag is accepted unless a trust statement permits
    /// it). Another tenant's principal must present the role's external id
    /// and be named, by tenant, in the principal scope of the trust
    /// statement that allows it.
    pub fn authorize_assume_role(
        &self,
        principal: &PrincipalFacts,
        role: &RoleRef,
        owner: &Incarnation,
        external_id: Option<&str>,
        tags: &Tags,
    ) -> AssumeRoleVerdict {
        let compiled = self.compiled(&role.owner, owner);
        self.authorize_assume_role_in(compiled.as_deref(), principal, role, external_id, tags)
    }

    /// [`authorize_assume_role`](Self::authorize_assume_role) with the
    /// role's tenant's compiled policies given (`None`: not loaded, a deny).
    pub fn authorize_assume_role_in(
        &self,
        compiled: Option<&CompiledTenant>,
        principal: &PrincipalFacts,
        role: &RoleRef,
        external_id: Option<&str>,
        tags: &Tags,
    ) -> AssumeRoleVerdict {
        let denied = |v: Verdict| AssumeRoleVerdict {
            verdict: v,
            tags: Vec::new(),
        };
        let Some(source) = principal.tenant() else {
            return denied(Verdict::deny("only tenant principals assume roles"));
        };
        if matches!(principal, PrincipalFacts::Session(_)) {
            return denied(Verdict::deny(
                "a session cannot assume a role (no role chaining)",
            ));
        }
        let Some(compiled) = compiled else {
            return denied(Verdict::deny(format!(
                "policies of tenant {} are not loaded",
                role.owner
            )));
        };
        let Some(r) = compiled.roles.get(&role.name) else {
            return denied(Verdict::deny(NO_SUCH_ROLE));
        };
        let verified = match (&r.external_id, external_id) {
            (Some(expected), Some(given)) => {
                bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
            }
            _ => false,
        };
        let resource = Resource::Role(role.clone());
        let trust = match self.evaluate(
            &r.trust,
            principal,
            Action::AssumeRole,
            &resource,
            &ResourceAttrs::default(),
            &RequestContext::ExternalId(verified),
        ) {
            Ok(d) => d,
            Err(reason) => return denied(Verdict::deny(reason)),
        };
        if trust.0 && source != &role.owner {
            let named = trust.1.iter().any(|id| {
                r.trust_scopes
                    .get(id)
                    .is_some_and(|t| t.as_ref() == Some(source))
            });
            if !named {
                return denied(Verdict {
                    allowed: false,
                    policies: trust.1,
                    reason: Some(format!(
                        "the trust policy does not name tenant {source} in its principal scope"
                    )),
                });
            }
        }
        let mut decision = verdict(Ok(trust));
        if !decision.allowed {
            return denied(decision);
        }
        let mut decided = Vec::with_capacity(tags.len());
        for (key, value) in tags {
            let (allowed, policies) = match self.evaluate(
                &r.trust,
                principal,
                Action::TagSession,
                &resource,
                &ResourceAttrs::default(),
                &RequestContext::Tag(key, value),
            ) {
                Ok(d) => d,
                Err(reason) => {
                    return denied(Verdict::deny(format!("session tag {key}: {reason}")));
                }
            };
            decided.push(TagVerdict {
                key: key.clone(),
                value: value.clone(),
                allowed,
                policies,
            });
        }
        if let Some(refused) = decided.iter().find(|t| !t.allowed) {
            decision.allowed = false;
            decision.reason = Some(format!(
                "the trust policy does not permit session tag {}={} (TagSession)",
                refused.key, refused.value
            ));
        }
        for t in &decided {
            for p in &t.policies {
                if !decision.policies.contains(p) {
                    decision.policies.push(p.clone());
                }
            }
        }
        decision.policies.sort();
        AssumeRoleVerdict {
            verdict: decision,
            tags: decided,
        }
    }

    fn evaluate(
        &self,
        policies: &PolicySet,
        principal: &PrincipalFacts,
        action: Action,
        resource: &Resource,
        attrs: &ResourceAttrs,
        context: &RequestContext<'_>,
    ) -> Result<(bool, Vec<String>), String> {
        // The entities and the request are built to the schema here, so
        // they are not validated against it again on every request (that
        // re-validation, and the schema's action entities added each time,
        // were most of a decision's cost); what the schema decides about the
        // request's shape is checked from the facts read at start-up.
        let facts = self
            .actions
            .get(&action)
            .ok_or_else(|| format!("action {} is not in the schema", action.name()))?;
        let mut entities = facts.entities.clone();
        let principal_uid = principal_entity(principal, &mut entities)?;
        let resource_uid = resource_entity(resource, attrs, &mut entities)?;
        let (p_type, r_type) = (
            principal_uid.type_name().to_string(),
            resource_uid.type_name().to_string(),
        );
        if !facts.principals.contains(&p_type) || !facts.resources.contains(&r_type) {
            return Err(format!(
                "request does not fit the schema: {} does not apply to {p_type} on {r_type}",
                action.name()
            ));
        }
        let context = match context {
            RequestContext::None => Context::empty(),
            RequestContext::ExternalId(v) => Context::from_pairs([(
                "external_id_verified".to_owned(),
                RestrictedExpression::new_bool(*v),
            )])
            .map_err(|e| e.to_string())?,
            RequestContext::Tag(key, value) => Context::from_pairs([
                (
                    "key".to_owned(),
                    RestrictedExpression::new_string((*key).clone()),
                ),
                (
                    "value".to_owned(),
                    RestrictedExpression::new_string((*value).clone()),
                ),
            ])
            .map_err(|e| e.to_string())?,
        };
        let request = Request::new(
            principal_uid,
            facts.uid.clone(),
            resource_uid,
            context,
            None,
        )
        .map_err(|e| format!("request does not fit the schema: {e}"))?;
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| format!("entities do not fit the schema: {e}"))?;
        #[cfg(feature = "fault-injection")]
        let without_guardrail;
        #[cfg(feature = "fault-injection")]
        let policies = if faults::guardrail_skipped() {
            without_guardrail = faults::without_guardrail(policies);
            &without_guardrail
        } else {
            policies
        };
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            // A policy that errs is skipped by Cedar; a skipped forbid could
            // turn into an allow, so any error denies.
            return Err(format!("policy evaluation error: {}", errors.join("; ")));
        }
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort();
        Ok((
            response.decision() == cedar_policy::Decision::Allow,
            policies,
        ))
    }
}

/// Reads, for every action, its entity (with its groups) and the principal
/// and resource types it applies to.
fn action_facts(schema: &Schema) -> Result<HashMap<Action, ActionFacts>, PolicyError> {
    let all = schema
        .action_entities()
        .map_err(|e| PolicyError::Schema(e.to_string()))?;
    let mut out = HashMap::new();
    for action in Action::ALL {
        let uid = uid("Action", action.name()).map_err(PolicyError::Schema)?;
        let missing =
            || PolicyError::Schema(format!("action {} is not in the schema", action.name()));
        let mut entities = vec![all.get(&uid).cloned().ok_or_else(missing)?];
        for group in all.ancestors(&uid).ok_or_else(missing)? {
            entities.extend(all.get(group).cloned());
        }
        let names = |types: Option<Box<dyn Iterator<Item = &EntityTypeName> + '_>>| {
            types
                .map(|t| t.map(ToString::to_string).collect::<HashSet<_>>())
                .unwrap_or_default()
        };
        out.insert(
            *action,
            ActionFacts {
                principals: names(schema.principals_for_action(&uid).map(|i| Box::new(i) as _)),
                resources: names(schema.resources_for_action(&uid).map(|i| Box::new(i) as _)),
                uid,
                entities,
            },
        );
    }
    Ok(out)
}

/// What a decision's Cedar context holds.
enum RequestContext<'a> {
    None,
    /// `AssumeRole`: whether the caller presented the role's external id.
    ExternalId(bool),
    /// `TagSession`: one requested session tag.
    Tag(&'a String, &'a String),
}

/// The one answer for a role that does not exist, whatever the reason.
pub const NO_SUCH_ROLE: &str = "no such role, or no trust policy permits this principal";

fn verdict(evaluated: Result<(bool, Vec<String>), String>) -> Verdict {
    match evaluated {
        Ok((allowed, policies)) => {
            let reason = (!allowed && policies.is_empty())
                .then(|| "no policy permits this request".to_owned());
            Verdict {
                allowed,
                policies,
                reason,
            }
        }
        Err(reason) => Verdict::deny(reason),
    }
}

/// The id tenant policy `id` has in decisions and audit entries.
pub fn policy_id(id: &str) -> String {
    format!("policy/{id}")
}

fn principal_role(p: &PrincipalFacts) -> Option<&str> {
    match p {
        PrincipalFacts::ApiKey { role, .. } => role.as_deref(),
        PrincipalFacts::Session(s) => Some(&s.role),
        _ => None,
    }
}

/// The tenant a trust statement names in its principal scope, if any.
fn named_tenant(p: &Policy) -> Option<TenantId> {
    let uid = match p.principal_constraint() {
        PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => uid,
        _ => return None,
    };
    (uid.type_name().to_string() == "Fief::Tenant")
        .then(|| TenantId::parse(uid.id().unescaped()).ok())
        .flatten()
}

fn add(set: &mut PolicySet, p: Policy) -> Result<(), DocumentErrors> {
    set.add(p).map_err(|e| {
        DocumentErrors(vec![Problem {
            line: 1,
            column: 1,
            message: e.to_string(),
        }])
    })
}

/// Splits the platform file at lines that hold only `// ---`.
fn policy_blocks(text: &str) -> Vec<String> {
    let mut blocks = vec![String::new()];
    for line in text.lines() {
        if line.trim() == "// ---" {
            blocks.push(String::new());
        } else if let Some(last) = blocks.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    blocks
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let name = EntityTypeName::from_str(&format!("Fief::{ty}")).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

enum Value {
    Uid(EntityUid),
    Str(String),
    Set(Vec<EntityUid>),
}

fn entity(
    uid: EntityUid,
    attrs: Vec<(&str, Value)>,
    parents: Vec<EntityUid>,
    tags: &Tags,
) -> Result<Entity, String> {
    let attrs = attrs.into_iter().map(|(k, v)| {
        let v = match v {
            Value::Uid(u) => RestrictedExpression::new_entity_uid(u),
            Value::Str(s) => RestrictedExpression::new_string(s),
            Value::Set(uids) => RestrictedExpression::new_set(
                uids.into_iter().map(RestrictedExpression::new_entity_uid),
            ),
        };
        (k.to_owned(), v)
    });
    let tags = tags
        .iter()
        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
    Entity::new_with_tags(uid, attrs, parents, tags).map_err(|e| e.to_string())
}

fn no_attrs(ty: &str, id: &str, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let uid = uid(ty, id)?;
    entities.push(Entity::new_no_attrs(uid.clone(), HashSet::new()));
    Ok(uid)
}

/// Adds the tenant's entity once (a tenant's `tenant` is itself).
fn tenant_entity(t: &TenantId, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let uid = uid("Tenant", t.as_str())?;
    if !entities.iter().any(|e| e.uid() == uid) {
        entities.push(entity(
            uid.clone(),
            vec![("tenant", Value::Uid(uid.clone()))],
            Vec::new(),
            &Tags::new(),
        )?);
    }
    Ok(uid)
}

fn role_entity(
    tenant: &TenantId,
    name: &str,
    entities: &mut Vec<Entity>,
) -> Result<EntityUid, String> {
    let owner = tenant_entity(tenant, entities)?;
    let uid = uid("Role", &format!("{tenant}/{name}"))?;
    if !entities.iter().any(|e| e.uid() == uid) {
        entities.push(entity(
            uid.clone(),
            vec![("tenant", Value::Uid(owner.clone()))],
            vec![owner],
            &Tags::new(),
        )?);
    }
    Ok(uid)
}

fn principal_entity(p: &PrincipalFacts, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let (uid, attrs, tenant, tags) = match p {
        PrincipalFacts::Operator => return no_attrs("Operator", "operator", entities),
        PrincipalFacts::ApiKey {
            key_id,
            tenant,
            role,
            tags,
            ..
        } => {
            let mut attrs = vec![("tenant", Value::Uid(tenant_entity(tenant, entities)?))];
            if let Some(role) = role {
                attrs.push(("role", Value::Uid(role_entity(tenant, role, entities)?)));
            }
            (uid("ApiKey", key_id)?, attrs, tenant, tags)
        }
        PrincipalFacts::User {
            subject,
            tenant,
            tags,
            ..
        } => {
            let attrs = vec![
                ("tenant", Value::Uid(tenant_entity(tenant, entities)?)),
                ("subject", Value::Str(subject.clone())),
            ];
            (
                uid("User", &format!("{tenant}/{subject}"))?,
                attrs,
                tenant,
                tags,
            )
        }
        PrincipalFacts::Session(s) => {
            let attrs = vec![
                ("tenant", Value::Uid(tenant_entity(&s.tenant, entities)?)),
                (
                    "role",
                    Value::Uid(role_entity(&s.tenant, &s.role, entities)?),
                ),
                ("session_name", Value::Str(s.session_name.clone())),
                (
                    "source_tenant",
                    Value::Uid(tenant_entity(&s.source_tenant, entities)?),
                ),
                ("source_principal", Value::Str(s.source_principal.clone())),
            ];
            let id = format!("{}/{}/{}", s.tenant, s.role, s.session_name);
            (uid("Session", &id)?, attrs, &s.tenant, &s.tags)
        }
    };
    let parent = tenant_entity(tenant, entities)?;
    entities.push(entity(uid.clone(), attrs, vec![parent], tags)?);
    Ok(uid)
}

fn resource_entity(
    r: &Resource,
    attrs: &ResourceAttrs,
    entities: &mut Vec<Entity>,
) -> Result<EntityUid, String> {
    let owned = |ty: &str, owner: &TenantId, id: &str, tags: &Tags, entities: &mut Vec<Entity>| {
        let owner = tenant_entity(owner, entities)?;
        let uid = uid(ty, id)?;
        entities.push(entity(
            uid.clone(),
            vec![("tenant", Value::Uid(owner))],
            Vec::new(),
            tags,
        )?);
        Ok::<_, String>(uid)
    };
    let none = Tags::new();
    match r {
        Resource::Tenant(t) => tenant_entity(t, entities),
        Resource::Model(m) => owned(
            "Model",
            &m.owner,
            &format!("{}/{}", m.owner, m.name),
            &attrs.tags,
            entities,
        ),
        Resource::Endpoint(t) => owned("Endpoint", t, t.as_str(), &none, entities),
        Resource::Policy { tenant, id } => {
            owned("Policy", tenant, &format!("{tenant}/{id}"), &none, entities)
        }
        Resource::Role(role) => role_entity(&role.owner, &role.name, entities),
        Resource::KnowledgeBase(kb) => owned(
            "KnowledgeBase",
            &kb.owner,
            &format!("{}/{}", kb.owner, kb.name),
            &none,
            entities,
        ),
        Resource::Table(t) => owned(
            "Table",
            &t.owner,
            &format!("{}/{}", t.owner, t.name),
            &none,
            entities,
        ),
        Resource::FoundationModel { name, available_to } => {
            let mut tenants = Vec::new();
            if let Some(t) = available_to {
                tenants.push(tenant_entity(t, entities)?);
            }
            let uid = uid("FoundationModel", name)?;
            entities.push(entity(
                uid.clone(),
                vec![("tenants", Value::Set(tenants))],
                Vec::new(),
                &attrs.tags,
            )?);
            Ok(uid)
        }
        Resource::SharedEndpoint => no_attrs("SharedEndpoint", "shared", entities),
        Resource::Platform => no_attrs("Platform", "platform", entities),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fief_core::ModelName;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }
    fn inc() -> Incarnation {
        Incarnation::from_random([7; 16])
    }
    fn key(tenant: &str) -> PrincipalFacts {
        PrincipalFacts::ApiKey {
            key_id: format!("k-{tenant}"),
            tenant: t(tenant),
            incarnation: inc(),
            role: None,
            tags: Tags::new(),
        }
    }
    fn model(owner: &str) -> Resource {
        Resource::Model(ModelRef {
            owner: t(owner),
            name: ModelName::parse("m").unwrap(),
        })
    }
    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
    /// An engine with `tenants` loaded, each with `docs`.
    fn engine_with(tenants: &[&str], docs: &TenantDocuments) -> PolicyEngine {
        let engine = PolicyEngine::new().unwrap();
        for tenant in tenants {
            let compiled = engine.compile_tenant(docs).unwrap();
            engine.install(&t(tenant), &inc(), 0, compiled);
        }
        engine
    }
    fn session(tenant: &str, role: &str, tags: Tags) -> PrincipalFacts {
        PrincipalFacts::Session(SessionFacts {
            tenant: t(tenant),
            incarnation: inc(),
            role: role.into(),
            session_name: "s".into(),
            tags,
            source_tenant: t(tenant),
            source_principal: "api-key:x".into(),
        })
    }
    fn role(name: &str, trust: &str, policies: &[&str], external_id: Option<&str>) -> RoleDocument {
        RoleDocument {
            name: name.into(),
            trust_policy: trust.into(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            external_id: external_id.map(Into::into),
        }
    }

    /// An assume-role decision without session tags.
    fn assume(
        engine: &PolicyEngine,
        p: &PrincipalFacts,
        role: &RoleRef,
        external_id: Option<&str>,
    ) -> Verdict {
        engine
            .authorize_assume_role(p, role, &inc(), external_id, &Tags::new())
            .verdict
    }

    #[test]
    fn own_resources_are_allowed() {
        let engine = engine_with(&["aa"], &TenantDocuments::default());
        for (action, resource) in [
            (Action::InvokeModel, model("aa")),
            (Action::PutModel, model("aa")),
            (Action::ListModels, Resource::Tenant(t("aa"))),
            (Action::InvokeEndpoint, Resource::Endpoint(t("aa"))),
            (Action::InvokeSharedEndpoint, Resource::SharedEndpoint),
            (
                Action::QueryKnowledgeBase,
                Resource::KnowledgeBase(KbRef {
                    owner: t("aa"),
                    name: "kb".into(),
                }),
            ),
            (Action::CreateEmbeddings, Resource::Tenant(t("aa"))),
            (Action::GetQuotas, Resource::Tenant(t("aa"))),
            (Action::SetQuota, Resource::Tenant(t("aa"))),
        ] {
            let d = engine.authorize(&key("aa"), action, &resource);
            assert!(d.allowed, "{action:?}: {:?}", d.reason);
        }
    }

    #[test]
    fn cross_tenant_is_denied_by_the_guardrail() {
        let engine = engine_with(&["aa", "bb"], &TenantDocuments::default());
        for (action, resource) in [
            (Action::InvokeModel, model("bb")),
            (Action::GetModel, model("bb")),
            (Action::DeleteModel, model("bb")),
            (Action::ListModels, Resource::Tenant(t("bb"))),
            (Action::InvokeEndpoint, Resource::Endpoint(t("bb"))),
            (Action::GetQuotas, Resource::Tenant(t("bb"))),
            (Action::SetQuota, Resource::Tenant(t("bb"))),
        ] {
            let d = engine.authorize(&key("aa"), action, &resource);
            assert!(!d.allowed, "{action:?}");
            assert_eq!(d.policies, vec![GUARDRAIL_ID.to_owned()]);
        }
    }

    #[test]
    fn a_tenant_whose_policies_are_not_loaded_is_denied() {
        let engine = engine_with(&[], &TenantDocuments::default());
        let d = engine.authorize(&key("aa"), Action::InvokeModel, &model("aa"));
        assert!(!d.allowed && d.reason.unwrap().contains("not loaded"));
        let engine = engine_with(&["aa"], &TenantDocuments::default());
        engine.invalidate(&t("aa"));
        assert!(
            !engine
                .authorize(&key("aa"), Action::InvokeModel, &model("aa"))
                .allowed
        );
        // A load that read the old generation cannot install after a change.
        let stale = engine.compile_tenant(&TenantDocuments::default()).unwrap();
        engine.install(&t("aa"), &inc(), 0, stale);
        assert!(!engine.is_loaded(&t("aa"), &inc()));
        // Policies compiled for one incarnation never serve another with the same id.
        let engine = engine_with(&["aa"], &TenantDocuments::default());
        let later = PrincipalFacts::ApiKey {
            key_id: "k".into(),
            tenant: t("aa"),
            incarnation: Incarnation::from_random([8; 16]),
            role: None,
            tags: Tags::new(),
        };
        let d = engine.authorize(&later, Action::InvokeModel, &model("aa"));
        assert!(!d.allowed && d.reason.unwrap().contains("not loaded"));
    }

    #[test]
    fn planes_are_separate() {
        let engine = engine_with(&["aa"], &TenantDocuments::default());
        // The operator has no data-plane action; a tenant key no admin action.
        let d = engine.authorize(&PrincipalFacts::Operator, Action::InvokeModel, &model("aa"));
        assert!(!d.allowed && d.reason.unwrap().contains("schema"));
        let d = engine.authorize(&key("aa"), Action::DeleteTenant, &Resource::Tenant(t("aa")));
        assert!(!d.allowed);
        let d = engine.authorize(
            &PrincipalFacts::Operator,
            Action::DeleteTenant,
            &Resource::Tenant(t("bb")),
        );
        assert!(d.allowed);
        let d = engine.authorize(
            &PrincipalFacts::Operator,
            Action::ListTenants,
            &Resource::Platform,
        );
        assert!(d.allowed);
        // A type mismatch in the request is a deny, not an error path that allows.
        let d = engine.authorize(&key("aa"), Action::InvokeModel, &Resource::Tenant(t("aa")));
        assert!(!d.allowed);
    }

    /// Cedar skips a policy whose evaluation errs; for a forbid that would
    /// turn into an allow. The engine must deny instead (invariant 9).
    #[test]
    fn an_evaluation_error_is_a_deny() {
        let erroring = "forbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };";
        let engine = engine_with(
            &["aa"],
            &TenantDocuments {
                policies: vec![("erroring".into(), erroring.into())],
                roles: Vec::new(),
            },
        );
        let d = engine.authorize(&key("aa"), Action::InvokeModel, &model("aa"));
        assert!(!d.allowed);
        assert!(d.reason.unwrap().contains("evaluation error"));
    }

    #[test]
    fn tenant_permit_all_opens_nothing_across_tenants() {
        let docs = TenantDocuments {
            policies: vec![("open".into(), "permit(principal, action, resource);".into())],
            roles: vec![role(
                "open",
                "permit(principal, action, resource);",
                &["permit(principal, action, resource);"],
                Some("x"),
            )],
        };
        let engine = engine_with(&["aa", "bb"], &docs);
        let scoped = PrincipalFacts::ApiKey {
            key_id: "s".into(),
            tenant: t("aa"),
            incarnation: inc(),
            role: Some("open".into()),
            tags: Tags::new(),
        };
        for p in [key("aa"), scoped, session("aa", "open", Tags::new())] {
            for action in Action::ALL {
                for resource in [
                    model("bb"),
                    Resource::Tenant(t("bb")),
                    Resource::Endpoint(t("bb")),
                    Resource::Policy {
                        tenant: t("bb"),
                        id: "p".into(),
                    },
                    Resource::Role(RoleRef {
                        owner: t("bb"),
                        name: "open".into(),
                    }),
                    Resource::KnowledgeBase(KbRef {
                        owner: t("bb"),
                        name: "kb".into(),
                    }),
                    Resource::Table(TableRef {
                        owner: t("bb"),
                        name: "memory".into(),
                    }),
                    Resource::Platform,
                    // A foundation model the deployment gives to bb only.
                    Resource::FoundationModel {
                        name: "bb-tuned".into(),
                        available_to: None,
                    },
                ] {
                    let d = engine.authorize(&p, *action, &resource);
                    assert!(!d.allowed, "{p:?} {action:?} {resource:?}");
                }
            }
        }
        // The trust policy `permit(principal, action, resource)` names no
        // tenant, so even the right external id does not let bb in.
        let d = assume(
            &engine,
            &key("bb"),
            &RoleRef {
                owner: t("aa"),
                name: "open".into(),
            },
            Some("x"),
        );
        assert!(!d.allowed && d.reason.unwrap().contains("does not name tenant bb"));
    }

    #[test]
    fn foundation_models_only_for_the_tenants_given_them() {
        let given = |to: Option<&str>| Resource::FoundationModel {
            name: "chat".into(),
            available_to: to.map(t),
        };
        let engine = engine_with(&["aa"], &TenantDocuments::default());
        let p = key("aa");
        assert!(
            engine
                .authorize(&p, Action::InvokeFoundationModel, &given(Some("aa")))
                .allowed
        );
        let d = engine.authorize(&p, Action::InvokeFoundationModel, &given(None));
        assert!(!d.allowed);
        assert_eq!(d.policies, vec![FOUNDATION_MODEL_GUARDRAIL_ID.to_owned()]);
        // Given to another tenant is not given to this one.
        assert!(
            !engine
                .authorize(&p, Action::InvokeFoundationModel, &given(Some("bb")))
                .allowed
        );
        // A session gets only what its role grants; tags narrow per model.
        let docs = TenantDocuments {
            policies: vec![(
                "no-large".into(),
                r#"forbid (principal, action == Fief::Action::"InvokeFoundationModel", resource)
                   when { resource.hasTag("Size") && resource.getTag("Size") == "large" };"#
                    .into(),
            )],
            roles: vec![role(
                "chatter",
                "permit(principal, action, resource);",
                &[
                    r#"permit (principal, action == Fief::Action::"InvokeFoundationModel", resource);"#,
                ],
                None,
            )],
        };
        let engine = engine_with(&["aa"], &docs);
        let s = session("aa", "chatter", Tags::new());
        assert!(
            engine
                .authorize(&s, Action::InvokeFoundationModel, &given(Some("aa")))
                .allowed
        );
        assert!(
            !engine
                .authorize(&s, Action::InvokeFoundationModel, &given(None))
                .allowed
        );
        let large = ResourceAttrs {
            tags: tags(&[("Size", "large")]),
        };
        assert!(
            !engine
                .authorize_with(
                    &p,
                    Action::InvokeFoundationModel,
                    &given(Some("aa")),
                    &large
                )
                .allowed
        );
        let no_role = session("aa", "gone", Tags::new());
        assert!(
            !engine
                .authorize(&no_role, Action::InvokeFoundationModel, &given(Some("aa")))
                .allowed
        );
    }

    #[test]
    fn sessions_get_only_what_policies_grant_and_tags_decide() {
        let dept = r#"permit(principal is Fief::Session, action in Fief::Action::"TenantResource", resource is Fief::Model)
when { principal.hasTag("Department") && resource.hasTag("Department")
       && principal.getTag("Department") == resource.getTag("Department") };"#;
        let docs = TenantDocuments {
            policies: vec![("dept".into(), dept.into())],
            roles: vec![role(
                "analyst",
                r#"permit(principal, action == Fief::Action::"AssumeRole", resource) when { principal.tenant == resource.tenant };"#,
                &[],
                None,
            )],
        };
        let engine = engine_with(&["aa"], &docs);
        let sales = session("aa", "analyst", tags(&[("Department", "Sales")]));
        let attrs = |d: &str| ResourceAttrs {
            tags: tags(&[("Department", d)]),
        };
        let d = engine.authorize_with(&sales, Action::InvokeModel, &model("aa"), &attrs("Sales"));
        assert!(d.allowed);
        assert_eq!(d.policies, ["policy/dept"]);
        let d = engine.authorize_with(&sales, Action::InvokeModel, &model("aa"), &attrs("HR"));
        assert!(!d.allowed);
        // Untagged resources and other actions: nothing grants them.
        let d = engine.authorize(&sales, Action::InvokeModel, &model("aa"));
        assert!(!d.allowed);
        let d = engine.authorize(&sales, Action::ListModels, &Resource::Tenant(t("aa")));
        assert!(!d.allowed);
        // A deleted role's sessions are denied.
        let gone = session("aa", "gone", Tags::new());
        assert!(
            !engine
                .authorize(&gone, Action::GetIdentity, &Resource::Tenant(t("aa")))
                .allowed
        );
    }

    #[test]
    fn cross_tenant_assume_role_needs_named_tenant_and_external_id() {
        let trust = r#"permit(principal in Fief::Tenant::"bb", action == Fief::Action::"AssumeRole", resource);"#;
        let docs = TenantDocuments {
            policies: Vec::new(),
            roles: vec![role("auditor", trust, &[], Some("ext-123"))],
        };
        let engine = engine_with(&["aa", "bb", "cc"], &docs);
        let role = RoleRef {
            owner: t("aa"),
            name: "auditor".into(),
        };
        let d = assume(&engine, &key("bb"), &role, Some("ext-123"));
        assert!(d.allowed, "{:?}", d.reason);
        assert_eq!(d.policies, ["role/auditor/trust"]);
        for ext in [None, Some("wrong"), Some("ext-1234")] {
            let d = assume(&engine, &key("bb"), &role, ext);
            assert!(!d.allowed);
            assert_eq!(d.policies, ["assume-role-guardrail"]);
        }
        // cc is not named in the trust policy.
        assert!(!assume(&engine, &key("cc"), &role, Some("ext-123")).allowed);
        // A session cannot chain into another role.
        let s = session("bb", "x", Tags::new());
        assert!(!assume(&engine, &s, &role, Some("ext-123")).allowed);
        // Unknown role.
        let missing = RoleRef {
            owner: t("aa"),
            name: "missing".into(),
        };
        assert!(!assume(&engine, &key("bb"), &missing, Some("ext-123")).allowed);
    }

    #[test]
    fn role_errors_say_which_part() {
        let engine = PolicyEngine::new().unwrap();
        let e = engine
            .validate_role(&role(
                "r",
                "permit(principal, action, resource);",
                &["permit(principal, action, resourc);"],
                None,
            ))
            .unwrap_err();
        assert!(e.to_string().contains("policies[0]"), "{e}");
        let e = engine
            .validate_role(&role("r", "permit(", &[], None))
            .unwrap_err();
        assert!(e.to_string().contains("trust_policy"), "{e}");
    }

    #[test]
    fn session_tags_need_a_tag_session_permit() {
        let assume_only = r#"permit(principal, action == Fief::Action::"AssumeRole", resource) when { principal.tenant == resource.tenant };"#;
        let own_department = r#"permit(principal, action == Fief::Action::"AssumeRole", resource) when { principal.tenant == resource.tenant };
permit(principal, action == Fief::Action::"TagSession", resource)
when { context.key == "Department" && principal.hasTag("Department") && context.value == principal.getTag("Department") };"#;
        let docs = TenantDocuments {
            policies: Vec::new(),
            roles: vec![
                role("plain", assume_only, &[], None),
                role("dept", own_department, &[], None),
            ],
        };
        let engine = engine_with(&["aa"], &docs);
        let role = |name: &str| RoleRef {
            owner: t("aa"),
            name: name.into(),
        };
        let sales_key = PrincipalFacts::ApiKey {
            key_id: "k".into(),
            tenant: t("aa"),
            incarnation: inc(),
            role: None,
            tags: tags(&[("Department", "Sales")]),
        };
        let decide = |p: &PrincipalFacts, r: &str, asked: &[(&str, &str)]| {
            engine.authorize_assume_role(p, &role(r), &inc(), None, &tags(asked))
        };
        // Without a TagSession permit, no tag is accepted, but the role is.
        assert!(decide(&sales_key, "plain", &[]).verdict.allowed);
        let d = decide(&sales_key, "plain", &[("Department", "Sales")]);
        assert!(!d.verdict.allowed);
        assert!(d.verdict.reason.unwrap().contains("TagSession"));
        // With one, only the caller's own verified tag passes.
        let d = decide(&sales_key, "dept", &[("Department", "Sales")]);
        assert!(d.verdict.allowed, "{:?}", d.verdict.reason);
        assert_eq!(d.tags.len(), 1);
        assert!(d.tags[0].allowed);
        assert_eq!(
            d.verdict.policies,
            ["role/dept/trust#1", "role/dept/trust#2"]
        );
        for asked in [
            vec![("Department", "HR")],
            vec![("Department", "Sales"), ("Clearance", "top")],
        ] {
            let d = decide(&sales_key, "dept", &asked);
            assert!(!d.verdict.allowed, "{asked:?}");
        }
        // A key without the tag cannot claim it.
        assert!(
            !decide(&key("aa"), "dept", &[("Department", "Sales")])
                .verdict
                .allowed
        );
        // TagSession is never decided as an ordinary action.
        let d = engine.authorize(
            &sales_key,
            Action::TagSession,
            &Resource::Role(role("dept")),
        );
        assert!(!d.allowed);
    }
}
