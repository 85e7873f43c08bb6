//! Weighted fair sharing of a fixed number of slots (the shared ONNX pool's
//! threads, a pooled upstream's concurrency) by the Virtual Token Counter
//! of "Fairness in Serving Large Language Models" (Sheng et al., OSDI
//! 2024): each tenant's counter grows by the service it receives divided by
//! its weight; a free slot goes to the backlogged tenant with the smallest
//! counter. It is work-conserving (a slot never idles while anyone waits),
//! and a tenant that becomes active is lifted to the smallest counter of
//! the active ones, so time spent idle banks no credit. `Fifo` hands slots
//! out in arrival order instead, for comparison.
//!
//! [`FairQueue`] is the pure scheduler; [`FairGate`] makes it awaitable.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fief_config::Scheduling;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct Tenant {
    counter: f64,
    waiting: VecDeque<u64>,
    running: usize,
}

/// The scheduler's state: counters, queues, what runs.
#[derive(Debug)]
pub struct FairQueue {
    mode: Scheduling,
    tenants: HashMap<String, Tenant>,
    next_ticket: u64,
}

impl FairQueue {
    pub fn new(mode: Scheduling) -> Self {
        Self {
            mode,
            tenants: HashMap::new(),
            next_ticket: 0,
        }
    }

    fn active_min(&self) -> Option<f64> {
        self.tenants
            .values()
            .filter(|t| t.running > 0 || !t.waiting.is_empty())
            .map(|t| t.counter)
            .reduce(f64::min)
    }

    /// A request of `tenant` arrives; returns its ticket.
    pub fn arrive(&mut self, tenant: &str) -> u64 {
        let floor = self.active_min();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if self.tenants.len() > 10_000 {
            self.prune(floor);
        }
        let t = self.tenants.entry(tenant.to_owned()).or_default();
        if t.running == 0 && t.waiting.is_empty() {
            if let Some(floor) = floor {
                t.counter = t.counter.max(floor);
            }
        }
        t.waiting.push_back(ticket);
        ticket
    }

    /// Forgets idle tenants whose counter is at or below the active floor:
    /// they would be lifted to it on return anyway.
    fn prune(&mut self, floor: Option<f64>) {
        let floor = floor.unwrap_or(f64::INFINITY);
        self.tenants
            .retain(|_, t| t.running > 0 || !t.waiting.is_empty() || t.counter > floor);
    }

    /// Whether anything waits.
    pub fn backlogged(&self) -> bool {
        self.tenants.values().any(|t| !t.waiting.is_empty())
    }

    /// The next ticket to serve, taken off its queue and counted running.
    pub fn dispatch(&mut self) -> Option<(String, u64)> {
        let chosen = self
            .tenants
            .iter()
            .filter_map(|(name, t)| t.waiting.front().map(|&ticket| (name, t, ticket)))
            .min_by(|a, b| match self.mode {
                Scheduling::Fifo => a.2.cmp(&b.2),
                // Equal counters (a tenant just lifted to the floor): the
                // one with fewer requests in service first, then arrival.
                Scheduling::Fair => {
                    a.1.counter
                        .total_cmp(&b.1.counter)
                        .then(a.1.running.cmp(&b.1.running))
                        .then(a.2.cmp(&b.2))
                }
            })
            .map(|(name, _, ticket)| (name.clone(), ticket))?;
        let t = self.tenants.get_mut(&chosen.0)?;
        t.waiting.pop_front();
        t.running += 1;
        Some(chosen)
    }

    /// A waiting ticket gave up.
    pub fn cancel(&mut self, tenant: &str, ticket: u64) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.waiting.retain(|&x| x != ticket);
        }
    }

    /// Charges service as it is given (an estimate at dispatch, the rest
    /// when it is known).
    pub fn charge(&mut self, tenant: &str, weight: f64, service: f64) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.counter += service / weight.max(1e-6);
        }
    }

    /// A running request of `tenant` ended.
    pub fn done(&mut self, tenant: &str) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.running = t.running.saturating_sub(1);
        }
    }

    pub fn counter(&self, tenant: &str) -> Option<f64> {
        self.tenants.get(tenant).map(|t| t.counter)
    }
}

struct Waiter {
    weight: f64,
    estimate: f64,
    tx: oneshot::Sender<()>,
}

struct Inner {
    queue: FairQueue,
    free: usize,
    waiters: HashMap<u64, Waiter>,
}

/// `slots` handed out fairly across tenants.
#[derive(Clone)]
pub struct FairGate {
    inner: Arc<Mutex<Inner>>,
    slots: usize,
}

/// A slot, held until dropped. Set the service it gave before dropping it
/// ([`FairPermit::served`]); otherwise the estimate stands.
pub struct FairPermit {
    inner: Arc<Mutex<Inner>>,
    tenant: String,
    weight: f64,
    estimate: f64,
    service: Option<f64>,
    waited: Duration,
}

impl FairPermit {
    pub fn served(&mut self, service: f64) {
        self.service = Some(service);
    }
    /// How long it queued for its slot.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.lock() {
            let extra = self.service.unwrap_or(self.estimate) - self.estimate;
            inner.queue.charge(&self.tenant, self.weight, extra);
            inner.queue.done(&self.tenant);
            hand_on(&mut inner);
        }
    }
}

/// Gives a free slot to the next waiter, if any; else keeps it free.
fn hand_on(inner: &mut Inner) {
    loop {
        let Some((tenant, ticket)) = inner.queue.dispatch() else {
            inner.free += 1;
            return;
        };
        match inner.waiters.remove(&ticket) {
            Some(w) => {
                inner.queue.charge(&tenant, w.weight, w.estimate);
                if w.tx.send(()).is_ok() {
                    return;
                }
                // It went away between: undo, try the next.
                inner.queue.charge(&tenant, w.weight, -w.estimate);
                inner.queue.done(&tenant);
            }
            None => inner.queue.done(&tenant),
        }
    }
}

/// Removes a waiter that gave up, or gives back a slot it was handed and
/// never saw.
struct Waiting {
    inner: Arc<Mutex<Inner>>,
    tenant: String,
    weight: f64,
    estimate: f64,
    ticket: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if let Ok(mut inner) = self.inner.lock() {
            if inner.waiters.remove(&self.ticket).is_some() {
                inner.queue.cancel(&self.tenant, self.ticket);
            } else if rx.try_recv().is_ok() {
                inner
                    .queue
                    .charge(&self.tenant, self.weight, -self.estimate);
                inner.queue.done(&self.tenant);
                hand_on(&mut inner);
            }
        }
    }
}

impl std::fmt::Debug for FairGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (running, waiting) = self.load();
        f.debug_struct("FairGate")
            .field("slots", &self.slots)
            .field("running", &running)
            .field("waiting", &waiting)
            .finish()
    }
}

impl FairGate {
    pub fn new(slots: usize, mode: Scheduling) -> Self {
        let slots = slots.max(1);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                queue: FairQueue::new(mode),
                free: slots,
                waiters: HashMap::new(),
            })),
            slots,
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// A tenant's virtual counter (service over weight), if it has one.
    pub fn counter(&self, tenant: &str) -> Option<f64> {
        self.inner.lock().ok()?.queue.counter(tenant)
    }

    /// Requests holding a slot and requests waiting for one.
    pub fn load(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (self.slots - i.free, i.waiters.len()))
            .unwrap_or((0, 0))
    }

    /// Waits for a slot for `tenant`; `estimate` is the service charged
    /// when it is granted (corrected by [`FairPermit::served`]).
    pub async fn acquire(&self, tenant: &str, weight: f64, estimate: f64) -> FairPermit {
        let started = Instant::now();
        let permit = |waited| FairPermit {
            inner: self.inner.clone(),
            tenant: tenant.to_owned(),
            weight,
            estimate,
            service: None,
            waited,
        };
        let (ticket, rx) = {
            let Ok(mut inner) = self.inner.lock() else {
                // A poisoned gate stops scheduling, not serving.
                return permit(Duration::ZERO);
            };
            let ticket = inner.queue.arrive(tenant);
            if inner.free > 0 && inner.waiters.is_empty() {
                inner.free -= 1;
                let _ = inner.queue.dispatch();
                inner.queue.charge(tenant, weight, estimate);
                return permit(Duration::ZERO);
            }
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(
                ticket,
                Waiter {
                    weight,
                    estimate,
                    tx,
                },
            );
            (ticket, rx)
        };
        let mut waiting = Waiting {
            inner: self.inner.clone(),
            tenant: tenant.to_owned(),
            weight,
            estimate,
            ticket,
            rx: Some(rx),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender is only dropped with the gate itself.
            let _ = rx.await;
        }
        waiting.rx = None;
        permit(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `rounds` dispatches with both tenants always backlogged, each
    /// request giving `cost` service; returns the share of dispatches each got.
    fn shares(mode: Scheduling, weights: (f64, f64), arrivals: (usize, usize)) -> (usize, usize) {
        let mut q = FairQueue::new(mode);
        for _ in 0..arrivals.0 {
            q.arrive("n");
        }
        for _ in 0..arrivals.1 {
            q.arrive("q");
        }
        let (mut n, mut qq) = (0, 0);
        while let Some((t, _)) = q.dispatch() {
            let w = if t == "n" { weights.0 } else { weights.1 };
            q.charge(&t, w, 10.0);
            q.done(&t);
            if t == "n" {
                n += 1;
            } else {
                qq += 1;
            }
            if n + qq == 100 {
                break;
            }
        }
        (n, qq)
    }

    #[test]
    fn backlogged_tenants_get_their_weighted_share_whatever_they_send() {
        // N queues ten times as much as Q: still half each.
        assert_eq!(shares(Scheduling::Fair, (1.0, 1.0), (1000, 100)), (50, 50));
        // Weight 3 against 1: three quarters.
        assert_eq!(shares(Scheduling::Fair, (3.0, 1.0), (1000, 1000)), (75, 25));
        // First come first served: N's earlier requests take everything.
        assert_eq!(shares(Scheduling::Fifo, (1.0, 1.0), (1000, 100)), (100, 0));
    }

    #[test]
    fn a_returning_tenant_is_lifted_and_banks_no_credit() {
        let mut q = FairQueue::new(Scheduling::Fair);
        // N works alone for a long time.
        for _ in 0..100 {
            q.arrive("n");
            let (t, _) = q.dispatch().unwrap();
            q.charge(&t, 1.0, 10.0);
            q.done(&t);
        }
        q.arrive("n");
        // Q had a tiny counter from long ago.
        q.tenants.entry("q".into()).or_default().counter = 1.0;
        q.arrive("q");
        assert_eq!(q.counter("q"), q.counter("n"));
        // Both backlogged from here: they alternate, Q does not get 100 in a row.
        for _ in 0..10 {
            q.arrive("n");
            q.arrive("q");
        }
        let mut order = String::new();
        for _ in 0..6 {
            let (t, _) = q.dispatch().unwrap();
            q.charge(&t, 1.0, 10.0);
            q.done(&t);
            order.push_str(&t);
        }
        assert!(order.matches('n').count() == 3, "{order}");
    }

    #[tokio::test]
    async fn the_gate_serves_the_lighter_tenant_first_and_cancelled_waiters_free_their_turn() {
        let gate = FairGate::new(1, Scheduling::Fair);
        let held = gate.acquire("n", 1.0, 100.0).await;
        let spawn = |tenant: &'static str| {
            let g = gate.clone();
            tokio::spawn(async move {
                let p = g.acquire(tenant, 1.0, 100.0).await;
                (tenant, p)
            })
        };
        let n2 = spawn("n");
        tokio::task::yield_now().await;
        let n3 = spawn("n");
        tokio::task::yield_now().await;
        let gone = spawn("n");
        tokio::task::yield_now().await;
        // Q arrives last and is lifted to N's counter.
        let q = spawn("q");
        tokio::task::yield_now().await;
        assert_eq!(gate.load(), (1, 4));
        gone.abort();
        let _ = gone.await;
        assert_eq!(gate.load(), (1, 3));
        drop(held);
        // A tie goes to the earlier arrival; then Q, lighter, before N's third.
        let (t, p) = n2.await.unwrap();
        assert_eq!(t, "n");
        drop(p);
        let (t, p) = q.await.unwrap();
        assert_eq!(t, "q");
        assert_eq!(gate.load(), (1, 1));
        drop(p);
        let (_, p) = n3.await.unwrap();
        drop(p);
        assert_eq!(gate.load(), (0, 0));
    }
}
