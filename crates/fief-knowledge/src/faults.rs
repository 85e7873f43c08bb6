//! Fault injection (feature `fault-injection`, tests only) for the
//! knowledge-base query path. Process-wide, off by default.

use std::sync::atomic::{AtomicBool, Ordering};

static DROP_PARTITION: AtomicBool = AtomicBool::new(false);

/// The query path's tenant filter is gone: a pool tenant's search walks
/// every partition of the shared index, and the chunk fetch forgets its
/// tenant condition. What is left is the seal.
pub fn drop_query_tenant_filter(on: bool) {
    DROP_PARTITION.store(on, Ordering::SeqCst);
    fief_store::faults::drop_tenant_filter(on);
}

/// Removes the last layer too: chunks open with their own tenant's key.
pub fn open_chunks_with_their_own_key(on: bool) {
    fief_store::faults::take_key_from_row(on);
}

pub(crate) fn query_partition_dropped() -> bool {
    DROP_PARTITION.load(Ordering::SeqCst)
}
