//! Tenant-written Cedar: validation must answer with located errors or
//! accept, never panic; whatever it accepts must compile into a tenant set.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use fief_policy::{PolicyEngine, RoleDocument, TenantDocuments};

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new().expect("platform policies load"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let engine = engine();
    match engine.validate_policy("fuzz", text) {
        Ok(()) => {
            let docs = TenantDocuments {
                policies: vec![("fuzz".into(), text.into())],
                roles: Vec::new(),
            };
            engine.compile_tenant(&docs).expect("a valid policy compiles");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for p in &errors.0 {
                assert!(p.line >= 1 && p.column >= 1);
            }
        }
    }
    let _ = engine.validate_role(&RoleDocument {
        name: "fuzz".into(),
        trust_policy: text.into(),
        policies: vec![text.into()],
        external_id: None,
    });
});
