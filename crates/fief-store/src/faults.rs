//! Fault injection (feature `fault-injection`, tests only): switches that
//! remove one isolation layer of the knowledge-base query path, so a test
//! can show what the remaining layer still stops. Process-wide, off by
//! default; a release build does not contain them.

use std::sync::atomic::{AtomicBool, Ordering};

static DROP_CHUNK_TENANT_FILTER: AtomicBool = AtomicBool::new(false);
static KEY_FROM_ROW: AtomicBool = AtomicBool::new(false);

/// The chunk fetch forgets its `tenant_id = ? AND kb = ?` condition.
pub fn drop_chunk_tenant_filter(on: bool) {
    DROP_CHUNK_TENANT_FILTER.store(on, Ordering::SeqCst);
}

/// Chunks are opened with the key and context of the row's own tenant
/// instead of the caller's scope: the encryption layer is gone.
pub fn take_key_from_row(on: bool) {
    KEY_FROM_ROW.store(on, Ordering::SeqCst);
}

pub(crate) fn chunk_tenant_filter_dropped() -> bool {
    DROP_CHUNK_TENANT_FILTER.load(Ordering::SeqCst)
}

pub(crate) fn key_from_row() -> bool {
    KEY_FROM_ROW.load(Ordering::SeqCst)
}
