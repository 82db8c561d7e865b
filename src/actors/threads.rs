//! The threads event actors run on: the HTTP workers' own.
//!
//! An event actor on a thread of its own costs every booking two thread
//! wakeups (worker → actor, and the answer back) on top of the commit. On
//! the worker threads, a request reaches an actor on its own worker without
//! waking anyone, and one on the other worker finds that thread mostly busy
//! anyway. Fewer context switches and more durable bookings per second
//! followed (figures in docs/performance.md).
//!
//! Isolation is kept: a panic in a request's handler ends that request's
//! task, not the worker thread (tokio catches it), so the actors beside it
//! live on, as they would on a thread of their own.

use std::sync::Mutex;

use super::gate::Gate;
use actix::prelude::*;

/// The HTTP workers' threads, as each worker announces itself.
pub struct WorkerThreads {
    /// How many workers the server starts: placement waits for all of them,
    /// so that events spread over every worker.
    expected: usize,
    started: Mutex<Vec<ArbiterHandle>>,
    /// Opened once the last worker announced itself.
    complete: Gate,
}

impl WorkerThreads {
    pub fn new(expected: usize) -> Self {
        assert!(expected > 0, "event actors need at least one thread");
        WorkerThreads {
            expected,
            started: Mutex::new(Vec::with_capacity(expected)),
            complete: Gate::default(),
        }
    }

    /// Called by each HTTP worker, on its own thread, as it builds its app.
    /// A worker restarted after its thread died takes the dead one's place.
    pub fn announce_current(&self) {
        let here = Arbiter::current();
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.len() < self.expected {
            started.push(here);
        } else if let Some(dead) = started.iter_mut().find(|thread| !thread.spawn(async {})) {
            // `spawn` refuses only when the arbiter has stopped.
            *dead = here;
        }
        if started.len() == self.expected {
            self.complete.open();
        }
    }

    /// Waits until every worker has announced itself.
    pub async fn all_started(&self) {
        self.complete.opened().await;
    }

    /// The thread for an event whose id hashes to `hash`. Once every worker
    /// started, the same hash always gives the same thread.
    pub fn pick(&self, hash: u64) -> ArbiterHandle {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        match started.len() {
            // Only before the workers start (never for a request, which
            // comes through a worker): the current thread serves.
            0 => Arbiter::current(),
            n => started[hash as usize % n].clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Announces a new thread, as a starting worker does; returns it.
    async fn start_worker(threads: &Arc<WorkerThreads>) -> Arbiter {
        let worker = Arbiter::new();
        let (announced, done) = futures::channel::oneshot::channel();
        let threads = threads.clone();
        worker.spawn(async move {
            threads.announce_current();
            let _ = announced.send(());
        });
        done.await.expect("the worker announced itself");
        worker
    }

    fn is_alive(thread: &ArbiterHandle) -> bool {
        thread.spawn(async {})
    }

    #[actix_web::test]
    async fn placement_waits_until_every_worker_started() {
        let threads = Arc::new(WorkerThreads::new(2));
        let _first = start_worker(&threads).await;
        let waiting =
            actix_web::rt::time::timeout(Duration::from_millis(50), threads.all_started());
        assert!(waiting.await.is_err(), "one worker of two is not all");
        let _second = start_worker(&threads).await;
        actix_web::rt::time::timeout(Duration::from_secs(5), threads.all_started())
            .await
            .expect("both workers started");
    }

    #[actix_web::test]
    async fn a_restarted_worker_takes_the_dead_ones_place() {
        let threads = Arc::new(WorkerThreads::new(2));
        let first = start_worker(&threads).await;
        let _second = start_worker(&threads).await;
        first.stop();
        first.join().expect("the first worker stopped");
        assert!(
            (0..2).any(|hash| !is_alive(&threads.pick(hash))),
            "the stopped worker is still placed on"
        );
        let _restarted = start_worker(&threads).await;
        for hash in 0..2 {
            assert!(
                is_alive(&threads.pick(hash)),
                "hash {hash} went to a dead thread"
            );
        }
    }
}
