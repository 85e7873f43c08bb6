//! Dedicated worker pools: a silo tenant's models run on threads of its own,
//! so a flood on any other tenant cannot occupy them (invariant 10).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot start worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("the worker pool stopped before the job finished")]
    Stopped,
}

/// A fixed set of threads fed by one queue. Dropping the pool lets queued
/// jobs finish, then the threads exit.
pub struct WorkerPool {
    name: String,
    sender: Mutex<Option<Sender<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    pub fn new(name: &str, threads: usize) -> Result<Self, PoolError> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("fief-{name}-{i}"))
                    .spawn(move || worker(&rx))
                    .map_err(PoolError::Spawn)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_owned(),
            sender: Mutex::new(Some(tx)),
            threads,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `f` on one of this pool's threads.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self
            .sender
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.send(job).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(PoolError::Stopped);
        }
        rx.await.map_err(|_| PoolError::Stopped)
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job must not take the thread with it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        // Threads finish their queue and exit on their own; not joined here
        // so dropping never blocks an async task.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_its_own_threads() {
        let pool = WorkerPool::new("t", 2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("fief-t-"));
        let sum: u64 = pool.run(|| (1..=10).sum()).await.unwrap();
        assert_eq!(sum, 55);
    }
}
