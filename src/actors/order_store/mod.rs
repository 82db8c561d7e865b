//! The persistence actor: group commit of every decided change.
//!
//! It runs on an arbiter thread of its own and calls SQLite synchronously
//! there, off the HTTP and event threads. One job per file:
//!
//! - `admission`: the bound on requests admitted and not yet answered
//!   ([`Backlog`], [`QueueSlot`]), checked before an event decides anything.
//! - `group_commit`: [`Persist`] queues a change, and one transaction takes
//!   every change that arrived meanwhile; a failed one voids what built on it.
//! - `reads`: what the others ask of the database through the store, behind
//!   the changes queued before them: a start ([`Recover`]), the barrier
//!   before an event is activated ([`Activate`]), one event's [`Reload`], a
//!   stored answer ([`LoadAnswer`]), readiness ([`CheckWritable`]).
//! - `housekeeping`: it adds the log's new rows to its index by event once a
//!   second, and when it has nothing to commit, it deletes rows no longer
//!   needed, a chunk at a time: expired idempotency answers
//!   ([`ForgetAnswers`]) and rows of the order log that later ones replaced
//!   ([`Compact`], from activations, and its own reads of the whole log).

mod admission;
mod group_commit;
mod housekeeping;
mod reads;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

pub use admission::{Backlog, QueueSlot};
pub use group_commit::{Flush, NotStored, Origin, Persist};
pub use housekeeping::{Compact, ForgetAnswers};
pub use reads::{Activate, CheckWritable, LoadAnswer, Recover, Recovered, Release, Reload};

use super::status_feed::StatusFeed;
use crate::ids::EventId;
use crate::storage::Database;
use crate::telemetry::StoreMetrics;

/// The persistence actor's state, by the job that uses it.
pub struct OrderStore {
    database: Database,

    // Group commit (`group_commit`).
    /// Changes that arrived since the last commit, in arrival order.
    queue: Vec<Persist>,
    /// A `CommitQueued` is on its way: more changes just join the queue.
    commit_scheduled: bool,
    /// Most changes in one transaction, so one batch cannot grow without bound.
    batch_limit: usize,
    /// Per event, the first generation whose changes may still be written.
    /// Changes decided before an event's failed commit build on state that was
    /// never stored, so they are refused without being written.
    valid_from: HashMap<EventId, u64>,
    /// What was committed, for `/metrics`.
    metrics: StoreMetrics,
    /// Where each committed change's status goes, to the event's streams.
    feed: Arc<StatusFeed>,
    /// The events this instance owns, each with the writer's session that
    /// took it (`Storage::claim`). A change of an event not owned in the
    /// current session is refused, not written: another instance may have
    /// decided for it since.
    owned: HashMap<EventId, u64>,

    // Housekeeping (`housekeeping`).
    /// Rows of the order log that a later row of the same user replaced, found
    /// by an event's activation or a read of the whole log, not deleted yet.
    /// Every change appends a row, so without this the log would grow with
    /// every cancellation for good, and the time to read an event with it.
    superseded: Vec<i64>,
    /// Idempotency answers still to delete: expired, or over the cap on keys.
    forget: Option<ForgetAnswers>,
    /// A `Tidy` is on its way.
    tidy_scheduled: bool,
    /// Rows replaced since the log was last read for them, counted from the
    /// cancellations committed.
    replaced_since_scan: u64,
    /// Rows the order log holds, at most: as the start estimated them from
    /// its first and last row, plus those committed since, minus those compacted.
    log_rows: u64,
    /// At this many replaced rows, if they are a quarter of the log or more,
    /// the log is read again (0: only at a start).
    compaction_interval: u64,
    /// The log is being read again, on a thread of its own.
    scanning: bool,
    /// When the last chunk was deleted, or the start ended.
    last_tidied: Instant,
    /// When the store last caught up with the log's new rows (see
    /// `Database::catch_up`), which is done in batches, not per commit.
    last_caught_up: Instant,
}

impl OrderStore {
    pub fn new(
        database: Database,
        batch_limit: usize,
        compaction_interval: u64,
        metrics: StoreMetrics,
        feed: Arc<StatusFeed>,
    ) -> Self {
        OrderStore {
            database,
            queue: Vec::new(),
            commit_scheduled: false,
            batch_limit,
            valid_from: HashMap::new(),
            metrics,
            feed,
            owned: HashMap::new(),
            superseded: Vec::new(),
            forget: None,
            tidy_scheduled: false,
            replaced_since_scan: 0,
            log_rows: 0,
            compaction_interval,
            scanning: false,
            last_tidied: Instant::now(),
            last_caught_up: Instant::now(),
        }
    }
}

impl Actor for OrderStore {
    type Context = Context<Self>;

    /// Catches up with the log once a second also while nothing is
    /// committed, so that the last rows of a burst do not wait for the next.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(housekeeping::CATCH_UP_EVERY, |store, _| {
            store.catch_up(false)
        });
    }
}
