//! Fault injection (feature `fault-injection`, tests only): switches that
//! remove one isolation layer of the data path, so a test
//! can show what the remaining layer still stops. Process-wide, off by
//! default; a release build does not contain them.

use std::sync::atomic::{AtomicBool, Ordering};

static DROP_TENANT_FILTER: AtomicBool = AtomicBool::new(false);
static KEY_FROM_ROW: AtomicBool = AtomicBool::new(false);
static SCOPE_FROM_ADDRESS: AtomicBool = AtomicBool::new(false);

/// The gate takes a tenant principal's scope from the addressed resource's
/// tenant instead of the principal's own: the application filter is gone.
pub fn take_scope_from_address(on: bool) {
    SCOPE_FROM_ADDRESS.store(on, Ordering::SeqCst);
}

pub(crate) fn scope_from_address() -> bool {
    SCOPE_FROM_ADDRESS.load(Ordering::SeqCst)
}

/// Queries on shared tables forget their tenant condition (the chunk
/// fetch its `tenant_id = ? AND kb = ?`, table items their `tenant_id = ?`).
pub fn drop_tenant_filter(on: bool) {
    DROP_TENANT_FILTER.store(on, Ordering::SeqCst);
}

/// Chunks are opened with the key and context of the row's own tenant
/// instead of the caller's scope: the encryption layer is gone.
pub fn take_key_from_row(on: bool) {
    KEY_FROM_ROW.store(on, Ordering::SeqCst);
}

pub(crate) fn tenant_filter_dropped() -> bool {
    DROP_TENANT_FILTER.load(Ordering::SeqCst)
}

pub(crate) fn key_from_row() -> bool {
    KEY_FROM_ROW.load(Ordering::SeqCst)
}
