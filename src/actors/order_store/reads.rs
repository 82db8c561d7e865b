//! What the rest of the server reads (or, for readiness, tries to write)
//! through the store, or needs the store to have committed before it reads.
//! Each runs on the store's thread, after the changes queued before it are
//! committed where that matters, so that it sees them.

use actix::prelude::*;

use super::{NotStored, OrderStore};
use crate::booking::EventState;
use crate::idempotency::{Answer, StoredKey};
use crate::ids::EventId;
use crate::storage::{StorageError, Totals};

/// Before an event is activated: commits every change queued before this
/// message (those an earlier actor of the event decided among them), so that
/// the read that follows sees them, and indexes the log's new rows, so that
/// it finds them by the index; and forgets that the event's changes
/// failed, which concerned actors that are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Activate {
    pub event: EventId,
}

/// Read one event as stored, after every change queued before this message.
#[derive(Message)]
#[rtype(result = "Result<Option<EventState>, NotStored>")]
pub struct Reload {
    pub event: EventId,
}

/// The stored answer of an idempotent request, in row `seq`, to replay it;
/// `None` once it expired.
#[derive(Message)]
#[rtype(result = "Result<Option<Answer>, NotStored>")]
pub struct LoadAnswer {
    pub seq: i64,
}

/// Reads what a start needs, before any change is queued: the answers of
/// idempotent requests stored at `answers_since` (unix seconds) or later, and
/// the events' counts, which the gauges of `/metrics` start from. No event's
/// orders: an event is read when first asked for.
#[derive(Message)]
#[rtype(result = "Result<Recovered, StorageError>")]
pub struct Recover {
    pub answers_since: i64,
}

/// What [`Recover`] read.
pub struct Recovered {
    pub totals: Totals,
    pub answers: Vec<StoredKey>,
    /// See [`Storage::raw_fingerprints_before`](crate::storage::Storage::raw_fingerprints_before).
    pub raw_fingerprints_before: i64,
}

/// Readiness: can a transaction that needs new pages commit? `Err` says why not.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct CheckWritable;

impl Handler<Reload> for OrderStore {
    type Result = Result<Option<EventState>, NotStored>;

    fn handle(&mut self, Reload { event }: Reload, _: &mut Context<Self>) -> Self::Result {
        self.commit_all();
        self.index_orders(true);
        // Its superseded rows are left to the event's next activation.
        let loaded = self.database.load_event(&event).map_err(|error| {
            log::error!("reloading event {event} failed: {error}");
            NotStored
        })?;
        Ok(loaded.map(|(state, _)| state))
    }
}

impl Handler<Activate> for OrderStore {
    type Result = ();

    fn handle(&mut self, Activate { event }: Activate, _: &mut Context<Self>) {
        self.commit_all();
        self.index_orders(true);
        self.valid_from.remove(&event);
    }
}

impl Handler<Recover> for OrderStore {
    type Result = Result<Recovered, StorageError>;

    fn handle(&mut self, recover: Recover, ctx: &mut Context<Self>) -> Self::Result {
        let totals = self.database.totals()?;
        let answers = self.database.load_answers(recover.answers_since)?;
        let raw_fingerprints_before = self.database.raw_fingerprints_before()?;
        self.metrics.recovered(totals);
        let log_rows = self.database.log_rows_at_most()?;
        self.tidy_after_recovery(log_rows, ctx);
        Ok(Recovered {
            totals,
            answers,
            raw_fingerprints_before,
        })
    }
}

impl Handler<LoadAnswer> for OrderStore {
    type Result = Result<Option<Answer>, NotStored>;

    fn handle(&mut self, LoadAnswer { seq }: LoadAnswer, _: &mut Context<Self>) -> Self::Result {
        self.database.load_answer(seq).map_err(|error| {
            log::error!("reading the stored answer {seq} failed: {error}");
            NotStored
        })
    }
}

impl Handler<CheckWritable> for OrderStore {
    type Result = Result<(), String>;

    fn handle(&mut self, _: CheckWritable, _: &mut Context<Self>) -> Self::Result {
        // Behind the changes already queued: the probe waits its turn like a booking.
        self.commit_all();
        self.database.check_writable().map_err(|error| {
            log::warn!("not ready: the database cannot be written: {error}");
            error.to_string()
        })
    }
}
