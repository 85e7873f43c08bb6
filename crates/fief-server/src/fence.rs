//! The offboarding fence for requests: every authenticated data-plane
//! request of a tenant incarnation holds a share of that incarnation's
//! activity until its response has been sent; offboarding closes the
//! incarnation (later requests are refused) and then waits for every share
//! to be returned. With the store's own fence (content operations re-check
//! the incarnation under the tenant's move lock, which offboarding takes
//! exclusively), no request of an offboarded tenant touches anything after
//! the offboarding's answer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use fief_core::{Incarnation, TenantId};

type Key = (TenantId, Incarnation);

#[derive(Default)]
struct Entry {
    closed: AtomicBool,
    lock: Arc<RwLock<()>>,
}

#[derive(Default)]
pub struct Activity {
    tenants: Mutex<HashMap<Key, Arc<Entry>>>,
}

/// One request's share of its tenant incarnation's activity.
pub struct Share {
    _guard: OwnedRwLockReadGuard<()>,
}

impl Activity {
    fn entry(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut tenants = self.tenants.lock().ok()?;
        Some(tenants.entry(key.clone()).or_default().clone())
    }

    /// A share for a request of `tenant`'s `incarnation`; `None` once its
    /// offboarding has begun.
    pub async fn enter(&self, tenant: &TenantId, incarnation: &Incarnation) -> Option<Share> {
        let entry = self.entry(&(tenant.clone(), incarnation.clone()))?;
        let guard = entry.lock.clone().read_owned().await;
        // Checked after the share is held: an offboarding that closed the
        // incarnation before is waiting for no one, so it must be refused.
        if entry.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(Share { _guard: guard })
    }

    /// Closes the incarnation to new requests and waits until every request
    /// holding a share has sent its response, for at most `limit` (a client
    /// that will not read its response cannot hold an offboarding back; the
    /// store's fence still stops any write). `true` if all finished.
    pub async fn drain(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
        limit: Duration,
    ) -> bool {
        let key = (tenant.clone(), incarnation.clone());
        let Some(entry) = self.entry(&key) else {
            return false;
        };
        entry.closed.store(true, Ordering::SeqCst);
        // The closed entry stays: a request authenticated just before the
        // offboarding began must find it closed, not a fresh one.
        tokio::time::timeout(limit, entry.lock.clone().write_owned())
            .await
            .is_ok()
    }
}

/// A response body that holds its request's share until it has been sent
/// (or the client went away and it was dropped).
pub struct Held {
    body: Body,
    _share: Share,
}

impl Held {
    pub fn body(body: Body, share: Share) -> Body {
        Body::new(Held {
            body,
            _share: share,
        })
    }
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_shares_and_refuses_later_ones() {
        let a = Activity::default();
        let t = TenantId::parse("aa").unwrap();
        let i = Incarnation::from_random([1; 16]);
        let share = a.enter(&t, &i).await.unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let holder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::SeqCst);
            drop(share);
        });
        assert!(a.drain(&t, &i, Duration::from_secs(5)).await);
        assert!(
            released.load(Ordering::SeqCst),
            "drain returned before the share"
        );
        holder.await.unwrap();
        assert!(a.enter(&t, &i).await.is_none(), "closed for good");
        // Another incarnation of the same id is not affected by the drain.
        let later = Incarnation::from_random([2; 16]);
        assert!(a.enter(&t, &later).await.is_some());
        // A share held past the limit does not block forever.
        let stuck = a.enter(&t, &later).await.unwrap();
        assert!(!a.drain(&t, &later, Duration::from_millis(50)).await);
        drop(stuck);
    }
}
