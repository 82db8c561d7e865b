//! Admission control: how many book and cancel requests may be admitted and
//! not yet answered by the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::telemetry;

/// Bounds the book and cancel requests admitted and not yet answered by the
/// store. A request takes its place when the route admits it, before it is
/// sent to its event actor: beyond the bound it is refused with 503 at once,
/// in microseconds, and nothing is decided. Were the place taken by the actor
/// instead, a refusal would first wait its turn in the actor's mailbox.
pub struct Backlog {
    queued: AtomicUsize,
    limit: usize,
}

impl Backlog {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Backlog {
            queued: AtomicUsize::new(0),
            limit,
        })
    }

    /// A place in the store's queue, or `None` (counted as a rejection) when it is full.
    pub fn reserve(self: &Arc<Self>) -> Option<QueueSlot> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            telemetry::queue_full("store");
            return None;
        }
        Some(QueueSlot(self.clone()))
    }
}

/// A place in the store's queue, given back when the `Persist` holding it
/// is answered and dropped, or when the request ends without a change to
/// store (a refusal, a full mailbox).
pub struct QueueSlot(Arc<Backlog>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_refuses_when_full_and_frees_a_place_when_a_slot_drops() {
        let backlog = Backlog::new(2);
        let first = backlog.reserve().expect("room for the first");
        let _second = backlog.reserve().expect("room for the second");
        assert!(backlog.reserve().is_none(), "a third is refused");
        drop(first);
        assert!(
            backlog.reserve().is_some(),
            "the freed place is taken again"
        );
    }
}
