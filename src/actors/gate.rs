//! A one-way gate: closed at first, opened once, and awaited until then.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    /// Wakes those waiting in [`opened`](Self::opened).
    opening: Notify,
}

impl Gate {
    /// Opens the gate and wakes everyone waiting; opening it again changes nothing.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opening.notify_waiters();
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once the gate is open (at once if it already is).
    pub async fn opened(&self) {
        loop {
            // Created before the check: an opening between the two is not missed.
            let opening = self.opening.notified();
            if self.is_open() {
                return;
            }
            opening.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[actix_web::test]
    async fn a_waiter_is_let_through_once_the_gate_opens_and_not_before() {
        let gate = Arc::new(Gate::default());
        let waiter = actix_web::rt::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        let early = actix_web::rt::time::timeout(Duration::from_millis(50), gate.opened());
        assert!(early.await.is_err(), "a closed gate let a waiter through");
        gate.open();
        actix_web::rt::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .expect("the waiter finished");
        assert!(gate.is_open());
    }
}
