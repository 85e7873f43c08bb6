//! Authorisation latency against the number of tenants: 10, 100, 1,000 and
//! 10,000 tenants, each with 5 policies of its own (tag rules, a forbid, a
//! role). A decision evaluates the platform policies plus one tenant's, so
//! its cost should not grow with the tenant count.
//!
//! `cargo bench -p fief-policy --bench authorization`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use fief_core::{Incarnation, ModelName, ModelRef, Tags, TenantId};
use fief_policy::{
    Action, PolicyEngine, PrincipalFacts, Resource, ResourceAttrs, RoleDocument, SessionFacts,
    TenantDocuments,
};

const DECISIONS: usize = 200_000;

fn incarnation() -> Incarnation {
    Incarnation::from_random([1; 16])
}

fn tenant(i: usize) -> TenantId {
    TenantId::parse(&format!("t{i:05}")).unwrap()
}

/// Five documents per tenant, with tenant-specific values so no two
/// tenants' sets are alike.
fn documents(i: usize) -> TenantDocuments {
    let dept = |d: &str| {
        format!(
            r#"permit (principal is Fief::Session, action in Fief::Action::"TenantResource", resource is Fief::Model)
when {{ principal.hasTag("Department") && resource.hasTag("Department") &&
       principal.getTag("Department") == resource.getTag("Department") && resource.getTag("Department") == "{d}-{i}" }};"#
        )
    };
    TenantDocuments {
        policies: vec![
            ("sales".into(), dept("Sales")),
            ("hr".into(), dept("HR")),
            (
                "protect".into(),
                format!(
                    r#"forbid (principal, action == Fief::Action::"DeleteModel", resource is Fief::Model)
when {{ resource.hasTag("Locked") && resource.getTag("Locked") == "yes-{i}" }};"#
                ),
            ),
            (
                "users-read".into(),
                format!(
                    r#"permit (principal is Fief::User, action in [Fief::Action::"GetModel", Fief::Action::"ListModels"], resource)
when {{ principal.subject == "reader-{i}" }};"#
                ),
            ),
        ],
        roles: vec![RoleDocument {
            name: "analyst".into(),
            trust_policy: format!(
                r#"permit (principal in Fief::Tenant::"t{i:05}", action == Fief::Action::"AssumeRole", resource);"#
            ),
            policies: vec![
                r#"permit (principal, action == Fief::Action::"InvokeModel", resource);"#.into(),
            ],
            external_id: None,
        }],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run(tenants: usize) {
    let engine = PolicyEngine::new().unwrap();
    let started = Instant::now();
    let mut compile = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let t0 = Instant::now();
        let compiled = engine.compile_tenant(&documents(i)).unwrap();
        compile.push(t0.elapsed());
        let t = tenant(i);
        engine.install(&t, &incarnation(), engine.generation(&t), compiled);
    }
    let load = started.elapsed();
    compile.sort();

    let mut rng = StdRng::seed_from_u64(7);
    let mut latencies = Vec::with_capacity(DECISIONS);
    let mut allowed = 0usize;
    for n in 0..DECISIONS {
        let i = rng.gen_range(0..tenants);
        let t = tenant(i);
        // Mostly own resources; one in eight addresses another tenant.
        let owner = if n % 8 == 0 {
            tenant(rng.gen_range(0..tenants))
        } else {
            t.clone()
        };
        let dept = if rng.gen_bool(0.5) { "Sales" } else { "HR" };
        // Principal kind and action chosen independently, so every kind
        // meets every action (and the forbid on deletes fires).
        let principal = match rng.gen_range(0..3) {
            0 => PrincipalFacts::ApiKey {
                key_id: format!("k{i}"),
                tenant: t.clone(),
                incarnation: incarnation(),
                role: None,
                tags: Tags::new(),
            },
            1 => PrincipalFacts::Session(SessionFacts {
                tenant: t.clone(),
                incarnation: incarnation(),
                role: "analyst".into(),
                session_name: "s".into(),
                tags: Tags::from([("Department".into(), format!("{dept}-{i}"))]),
                source_tenant: t.clone(),
                source_principal: format!("api-key:k{i}"),
            }),
            _ => PrincipalFacts::User {
                subject: format!("reader-{i}"),
                tenant: t.clone(),
                incarnation: incarnation(),
                tags: Tags::new(),
            },
        };
        let action =
            [Action::InvokeModel, Action::GetModel, Action::DeleteModel][rng.gen_range(0..3)];
        let resource = Resource::Model(ModelRef {
            owner,
            name: ModelName::parse("m").unwrap(),
        });
        let mut tags = Tags::from([("Department".into(), format!("Sales-{i}"))]);
        if rng.gen_bool(0.25) {
            // The tenant's forbid on deleting locked models applies.
            tags.insert("Locked".into(), format!("yes-{i}"));
        }
        let attrs = ResourceAttrs { tags };
        let t0 = Instant::now();
        let d = black_box(engine.authorize_with(&principal, action, &resource, &attrs));
        latencies.push(t0.elapsed());
        allowed += usize::from(d.allowed);
    }
    latencies.sort();
    println!(
        "{tenants:>6} tenants x 5 policies | authorize p50 {:>7.1?} p99 {:>7.1?} max {:>7.1?} | allowed {:>4.1}% | compile one tenant p50 {:>7.1?} | load all {:>6.2?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        100.0 * allowed as f64 / DECISIONS as f64,
        percentile(&compile, 0.50),
        load,
    );
}

fn main() {
    println!("authorisation latency, {DECISIONS} decisions per row (random tenants, principals, actions)");
    for tenants in [10, 100, 1_000, 10_000] {
        run(tenants);
    }
}
