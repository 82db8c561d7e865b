//! What the rest of the server reads (or, for readiness, tries to write)
//! through the store, or needs the store to have committed before it reads.
//! Each runs on the store's thread, after the changes queued before it are
//! committed where that matters, so that it sees them.

use actix::prelude::*;

use super::{NotStored, OrderStore};
use crate::actors::event::BookingError;
use crate::booking::EventState;
use crate::idempotency::{Answer, StoredKey};
use crate::ids::EventId;
use crate::storage::{StorageError, Totals, NO_SESSION};

/// Before an event is activated: commits every change queued before this
/// message (those an earlier actor of the event decided among them), so that
/// the read that follows sees them, and indexes the log's new rows, so that
/// it finds them by the index; forgets that the event's changes failed,
/// which concerned actors that are gone; and takes the event's ownership
/// (`Storage::claim`): the writer's session under which it is owned, or
/// `Elsewhere` if another instance has it.
#[derive(Message)]
#[rtype(result = "Result<u64, BookingError>")]
pub struct Activate {
    pub event: EventId,
}

/// An event's actor stopped (or its activation gave up): once its changes
/// queued before this message are committed, its ownership is given up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub event: EventId,
}

/// Read one event as stored, after every change queued before this
/// message; with the writer's session under which this instance owns it.
#[derive(Message)]
#[rtype(result = "Result<Option<(EventState, u64)>, NotStored>")]
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
    type Result = Result<Option<(EventState, u64)>, NotStored>;

    fn handle(&mut self, Reload { event }: Reload, _: &mut Context<Self>) -> Self::Result {
        self.commit_all();
        self.catch_up(true);
        // Its ownership went with the session that committed: only a new claim lets it decide again.
        let session = self.own(&event).map_err(|error| {
            log::warn!("event {event} cannot be reloaded here: {error:?}");
            NotStored
        })?;
        // Its superseded rows are left to the event's next activation.
        let loaded = self.database.load_event(&event).map_err(|error| {
            log::error!("reloading event {event} failed: {error}");
            NotStored
        })?;
        Ok(loaded.map(|(state, _)| (state, session)))
    }
}

impl Handler<Activate> for OrderStore {
    type Result = Result<u64, BookingError>;

    fn handle(&mut self, Activate { event }: Activate, _: &mut Context<Self>) -> Self::Result {
        self.commit_all();
        self.catch_up(true);
        self.valid_from.remove(&event);
        self.own(&event)
    }
}

impl Handler<Release> for OrderStore {
    type Result = ();

    fn handle(&mut self, Release { event }: Release, _: &mut Context<Self>) {
        self.commit_all();
        if self.database.fences() {
            // Given up: another instance may take the event, and its
            // streams here would go silent. They end, after every status
            // just committed; their clients reconnect, to its owner.
            self.feed.end_streams(&event);
        }
        // Owned in an earlier session: the lock ended with it.
        if self.owned.remove(&event) == Some(self.database.session()) {
            if let Err(error) = self.database.release(&event) {
                log::warn!("could not give up event {event}: {error}");
            }
        }
        // A map does not shrink by itself: after many events passivated it
        // would keep their room (as `Directory::finish_passivation` says).
        if self.owned.len() * 4 < self.owned.capacity() {
            self.owned.shrink_to_fit();
        }
    }
}

impl OrderStore {
    /// Makes sure this instance owns `event` in the writer's current session.
    /// Returns that session.
    fn own(&mut self, event: &EventId) -> Result<u64, BookingError> {
        let current = self.database.session();
        if current != NO_SESSION && self.owned.get(event) == Some(&current) {
            return Ok(current);
        }
        match self.database.claim(event) {
            Ok(Some(session)) if session != NO_SESSION => {
                self.owned.insert(event.clone(), session);
                Ok(session)
            }
            // Taken, but the session ended meanwhile.
            Ok(Some(_)) => Err(BookingError::StorageUnavailable),
            Ok(None) => Err(BookingError::Elsewhere),
            Err(error) => {
                log::error!("could not take event {event}: {error}");
                Err(BookingError::StorageUnavailable)
            }
        }
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
