//! Group commit: a [`Persist`] only queues its change and, if none is
//! pending, schedules a `CommitQueued` notification. actix runs notifications
//! only after the mailbox is drained, so each commit takes every change that
//! arrived meanwhile, including all those that came in while the previous
//! transaction was on the disk. One fsync thus carries as many bookings as
//! arrived during the last one, and each change's `done` callback answers its
//! request straight from this thread once `COMMIT` returned.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use actix::prelude::*;

use super::{OrderStore, QueueSlot};
use crate::actors::event::{EventAddr, StorageFailed};
use crate::booking::{Standing, Summary};
use crate::idempotency::Pending;
use crate::ids::{EventId, UserKey};
use crate::storage::{Change, StorageError};

/// The change was not stored; the cause is logged where it happened.
#[derive(Debug, Clone, Copy)]
pub struct NotStored;

/// Called once, on the store's thread, with the outcome of a change's commit:
/// it answers the waiting request directly.
pub type OnCommit = Box<dyn FnOnce(Result<(), NotStored>) + Send>;

/// The event actor that decided a change, and its generation then: told when
/// the change's commit fails, and used to void what it decided since.
pub struct Origin {
    pub actor: EventAddr,
    pub event: EventId,
    pub generation: u64,
}

/// Store one decided change and/or the answer of an idempotent request;
/// `done` hears whether they were committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Persist {
    /// `None` for an answer that changed nothing (a refusal).
    pub change: Option<Change>,
    /// The answer of an idempotent request, stored in the same transaction.
    pub answer: Option<Pending>,
    /// `None` for what no event actor decided (a new event, an unknown one).
    pub origin: Option<Origin>,
    /// The event's status after `change`, for its status streams once the
    /// change is committed (see `StatusFeed`).
    pub published: Option<Summary>,
    /// Watched users' standings after every change before it, published
    /// once those are committed (see `EventActor::publish_standings`).
    /// Empty but in the `Persist`s that carry nothing else: those write
    /// nothing.
    pub standings: Vec<(UserKey, Standing)>,
    pub done: OnCommit,
    /// Its place in the bounded queue, freed once it is answered; `None`
    /// for a change no request asked for (a hold's lapse), which is stored
    /// whatever the backlog: it was decided already.
    pub slot: Option<QueueSlot>,
}

impl Persist {
    /// Standings to publish and nothing to write.
    fn publishes_only(&self) -> bool {
        self.change.is_none() && self.answer.is_none()
    }

    /// Answers the request with the outcome of its commit (and the row of
    /// its idempotent answer, if it has one). The idempotency
    /// key and the queue place are settled first: a client that retries or
    /// books again the moment it hears the answer finds the key replayable
    /// (stored) or free (not stored), and the place given back.
    fn settle(self, stored: Result<Option<i64>, NotStored>) {
        let Persist {
            answer, done, slot, ..
        } = self;
        if let (Ok(Some(row)), Some(answer)) = (stored, answer) {
            answer.committed(row);
        }
        drop(slot);
        done(stored.map(|_| ()));
    }
}

/// Answers once every change sent before it is committed or refused.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Commits what is queued (sent to itself once the mailbox is drained).
#[derive(Message)]
#[rtype(result = "()")]
struct CommitQueued;

impl OrderStore {
    /// Commits everything queued, in transactions of at most `batch_limit`.
    pub(super) fn commit_all(&mut self) {
        while !self.queue.is_empty() {
            let rest = self.queue.split_off(self.queue.len().min(self.batch_limit));
            let batch = std::mem::replace(&mut self.queue, rest);
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Persist>) {
        let session = self.database.session();
        let (void, writes): (Vec<Persist>, Vec<Persist>) =
            batch.into_iter().partition(|p| self.is_void(p, session));
        for persist in void {
            self.refuse(persist);
        }
        if writes.is_empty() {
            return;
        }
        if writes.iter().all(Persist::publishes_only) {
            // Nothing to write: what they publish is committed already.
            return self.committed(writes, Vec::new());
        }
        let changes = writes.iter().filter_map(|persist| persist.change.as_ref());
        let answers = writes
            .iter()
            .filter_map(|persist| persist.answer.as_ref().map(|answer| &answer.stored));
        // A panic must not lose the answers: treat it as a failed (rolled back) commit.
        let started = Instant::now();
        let committed = catch_unwind(AssertUnwindSafe(|| self.database.commit(changes, answers)))
            .unwrap_or_else(|_| Err(StorageError::Inconsistent("the commit panicked".into())));
        match committed {
            Ok(rows) => {
                let stored = writes.iter().filter(|p| !p.publishes_only()).count();
                self.metrics.committed(stored, started.elapsed());
                self.committed(writes, rows);
            }
            Err(error) => self.fail(error, writes),
        }
    }

    /// Publishes what the committed `writes` carry for the streams and
    /// answers them, with their answers' `rows` in order.
    fn committed(&mut self, writes: Vec<Persist>, rows: Vec<i64>) {
        let mut rows = rows.into_iter();
        for persist in writes {
            if let Some(change) = &persist.change {
                self.metrics.stored(change);
                if let Some(status) = persist.published {
                    self.feed.publish(change.event(), status);
                }
                self.log_rows += change.log_rows().count() as u64;
                self.replaced_since_scan += match change {
                    Change::Order { update, .. } => update.rows_replaced(),
                    // Each promoted user's waiting row.
                    Change::Configure { promoted, .. } => promoted.len() as u64,
                    Change::CreateEvent { .. } => 0,
                };
            }
            if let (false, Some(origin)) = (persist.standings.is_empty(), &persist.origin) {
                self.feed
                    .publish_standings(&origin.event, &persist.standings);
            }
            let row = persist.answer.as_ref().and_then(|_| rows.next());
            persist.settle(Ok(row));
        }
    }

    /// A change built on one that failed, or of an event this instance does
    /// not own in the writer's `session` (where ownership is fenced).
    fn is_void(&self, persist: &Persist, session: u64) -> bool {
        let failed_before = persist.origin.as_ref().is_some_and(|origin| {
            self.valid_from
                .get(&origin.event)
                .is_some_and(|valid_from| origin.generation < *valid_from)
        });
        // Standings are published only by an owner, like changes.
        let fenced = match (&persist.change, &persist.origin) {
            (Some(change), _) => Some(change.event()),
            (None, Some(origin)) if !persist.standings.is_empty() => Some(&origin.event),
            (None, _) => None,
        };
        let not_owned = || {
            self.database.fences()
                && fenced.is_some_and(|event| self.owned.get(event) != Some(&session))
        };
        failed_before || not_owned()
    }

    /// After a failed transaction: voids what its events decided since, tells
    /// them to reload, and answers its changes.
    fn fail(&mut self, error: StorageError, writes: Vec<Persist>) {
        self.metrics.failed();
        let changes = writes.iter().filter(|p| !p.publishes_only()).count();
        log::error!("commit of {changes} changes failed, none stored: {error}");
        for persist in writes {
            self.refuse(persist);
        }
    }

    /// Answers a change that was not stored, and voids what its event's
    /// actor decided since: the actor is told to reload, once per generation.
    fn refuse(&mut self, persist: Persist) {
        if let Some(Origin {
            actor,
            event,
            generation,
        }) = &persist.origin
        {
            let valid_from = self.valid_from.entry(event.clone()).or_default();
            if *valid_from <= *generation {
                *valid_from = generation + 1;
                actor.do_send(StorageFailed {
                    generation: *generation,
                });
            }
        }
        persist.settle(Err(NotStored));
    }
}

impl Handler<Persist> for OrderStore {
    type Result = ();

    fn handle(&mut self, persist: Persist, ctx: &mut Context<Self>) {
        self.queue.push(persist);
        if !self.commit_scheduled {
            self.commit_scheduled = true;
            ctx.notify(CommitQueued);
        }
    }
}

impl Handler<CommitQueued> for OrderStore {
    type Result = ();

    fn handle(&mut self, _: CommitQueued, ctx: &mut Context<Self>) {
        self.commit_scheduled = false;
        self.commit_all();
        self.catch_up(false);
        self.scan_later(ctx);
        self.tidy_later(ctx);
    }
}

impl Handler<Flush> for OrderStore {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.commit_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use actix_web::test::TestRequest;
    use actix_web::HttpRequest;

    use super::*;
    use crate::actors::order_store::Backlog;
    use crate::idempotency::{Answer, Begin, Idempotency};

    fn keyed_request() -> HttpRequest {
        TestRequest::default()
            .uri("/api/book")
            .insert_header(("idempotency-key", "k"))
            .to_http_request()
    }

    #[test]
    fn a_request_hears_its_answer_only_once_its_key_and_place_are_settled() {
        for stored in [Ok(()), Err(NotStored)] {
            let idempotency = Arc::new(Idempotency::new(Duration::from_secs(60), 0));
            let backlog = Backlog::new(1);
            let Ok(Some(Begin::Execute(claim))) =
                idempotency.begin(&keyed_request(), || b"{}".to_vec(), b"{}")
            else {
                panic!("a new key executes");
            };
            // What a client retrying the moment it hears the answer would meet.
            let (heard, hear) = mpsc::channel();
            let done: OnCommit = Box::new({
                let (idempotency, backlog) = (idempotency.clone(), backlog.clone());
                move |outcome| {
                    let retry = match idempotency.begin(&keyed_request(), || b"{}".to_vec(), b"{}")
                    {
                        Ok(Some(Begin::Execute(_))) => "executes",
                        Ok(Some(Begin::Replay { seq: 7 })) => "replays row 7",
                        _ => "is refused",
                    };
                    let _ = heard.send((outcome.is_ok(), retry, backlog.reserve().is_some()));
                }
            });
            let answer = Answer {
                status: 200,
                body: "{}".into(),
            };
            Persist {
                change: None,
                answer: Some(claim.answer(answer)),
                origin: None,
                published: None,
                standings: Vec::new(),
                done,
                slot: backlog.reserve(),
            }
            .settle(stored.map(|()| Some(7)));
            let retry = if stored.is_ok() {
                "replays row 7"
            } else {
                "executes"
            };
            assert_eq!(hear.recv().unwrap(), (stored.is_ok(), retry, true));
        }
    }
}
