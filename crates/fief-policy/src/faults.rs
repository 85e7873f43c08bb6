//! Fault injection (feature `fault-injection`, tests only): each switch
//! removes one isolation layer so a test can show what the remaining layers
//! still stop, and that the isolation verifier reports the leak when none is
//! left. Process-wide and off by default.

use std::sync::atomic::{AtomicBool, Ordering};

use cedar_policy::{PolicyId, PolicySet};

use crate::{FOUNDATION_MODEL_GUARDRAIL_ID, GUARDRAIL_ID};

static SKIP_GUARDRAIL: AtomicBool = AtomicBool::new(false);

/// Evaluate without the platform guardrail `forbid`s (the tenant-resource
/// one and the foundation-model one).
pub fn skip_guardrail(on: bool) {
    SKIP_GUARDRAIL.store(on, Ordering::SeqCst);
}

pub(crate) fn guardrail_skipped() -> bool {
    SKIP_GUARDRAIL.load(Ordering::SeqCst)
}

pub(crate) fn without_guardrail(policies: &PolicySet) -> PolicySet {
    let mut set = policies.clone();
    let _ = set.remove_static(PolicyId::new(GUARDRAIL_ID));
    let _ = set.remove_static(PolicyId::new(FOUNDATION_MODEL_GUARDRAIL_ID));
    set
}
