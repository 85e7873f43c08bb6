//! Fault injection (feature `fault-injection`, tests only): each switch
//! removes one isolation layer so a test can show what the remaining layers
//! still stop, and that the isolation verifier reports the leak when none is
//! left. Process-wide and off by default.

use std::sync::atomic::{AtomicBool, Ordering};

use cedar_policy::{PolicyId, PolicySet};

use crate::GUARDRAIL_ID;

static SKIP_GUARDRAIL: AtomicBool = AtomicBool::new(false);
static SCOPE_FROM_ADDRESS: AtomicBool = AtomicBool::new(false);

/// Evaluate without the platform guardrail `forbid`.
pub fn skip_guardrail(on: bool) {
    SKIP_GUARDRAIL.store(on, Ordering::SeqCst);
}

/// Remove the application filter: an allow scopes storage to the addressed
/// resource's tenant instead of the caller's own.
pub fn take_scope_from_address(on: bool) {
    SCOPE_FROM_ADDRESS.store(on, Ordering::SeqCst);
}

pub(crate) fn guardrail_skipped() -> bool {
    SKIP_GUARDRAIL.load(Ordering::SeqCst)
}

pub(crate) fn scope_from_address() -> bool {
    SCOPE_FROM_ADDRESS.load(Ordering::SeqCst)
}

pub(crate) fn without_guardrail(policies: &PolicySet) -> PolicySet {
    let mut set = policies.clone();
    let _ = set.remove_static(PolicyId::new(GUARDRAIL_ID));
    set
}
