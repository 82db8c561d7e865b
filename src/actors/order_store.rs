//! The persistence actor: group commit of every decided change.
//!
//! It runs on an arbiter thread of its own and calls SQLite synchronously
//! there, off the HTTP and event threads. A `Persist` message only queues its
//! change and, if none is pending, schedules a [`CommitQueued`] notification.
//! actix runs notifications only after the mailbox is drained, so each commit
//! takes every change that arrived meanwhile, including all those that came
//! in while the previous transaction was on the disk. One fsync thus carries
//! as many bookings as arrived during the last one, and each change's `done`
//! callback answers its request straight from this thread once `COMMIT` returned.
//!
//! When it has nothing to commit, it deletes rows no longer needed: see
//! [`Tidy`]. Rows of the order log that later ones replaced are found by
//! recovery, and again once cancellations have replaced enough of the log
//! (see [`OrderStore::scan_later`]).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::event::{EventAddr, StorageFailed};
use crate::booking::EventState;
use crate::idempotency::{Answer, Pending, StoredKey};
use crate::ids::EventId;
use crate::storage::{Change, Database, StorageError, StoredOrders};
use crate::telemetry::{self, StoreMetrics};

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
    pub done: OnCommit,
    /// Its place in the bounded queue, freed once it is answered.
    pub slot: QueueSlot,
}

impl Persist {
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

/// Answers once every change sent before it is committed or refused.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Deletes the stored answers of idempotent requests stored before `cutoff`
/// (unix seconds) or in a row before `first_kept` (over the cap on keys),
/// a chunk at a time (see [`Tidy`]).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct ForgetAnswers {
    pub cutoff: i64,
    pub first_kept: i64,
}

/// Reads everything stored, before any change is queued: every event, and
/// the answers of idempotent requests stored at `answers_since` (unix
/// seconds) or later. The gauges of `/metrics` start from what it read.
#[derive(Message)]
#[rtype(result = "Result<Recovered, StorageError>")]
pub struct Recover {
    pub answers_since: i64,
}

/// What [`Recover`] read.
pub struct Recovered {
    pub events: Vec<(EventId, EventState)>,
    pub answers: Vec<StoredKey>,
    /// See [`Database::raw_fingerprints_before`].
    pub raw_fingerprints_before: i64,
}

/// Readiness: can a transaction that needs new pages commit? `Err` says why not.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct CheckWritable;

/// Commits what is queued (sent to itself once the mailbox is drained).
#[derive(Message)]
#[rtype(result = "()")]
struct CommitQueued;

/// From the thread that read the order log again: the rows that later ones
/// replaced, in ascending order, and how long the read took.
#[derive(Message)]
#[rtype(result = "()")]
struct Scanned(Result<Vec<i64>, StorageError>, Duration);

/// Deletes the next chunk of rows no longer needed: idempotency answers to
/// forget, then rows of the order log found superseded by recovery or a later
/// read of the log (sent to itself). A chunk runs when nothing waits to be
/// committed, or if the last one ran a second ago or more, so that it goes on
/// under any load.
#[derive(Message)]
#[rtype(result = "()")]
struct Tidy;

/// Superseded rows deleted per transaction. About 3 ms even when each is on a
/// page of its own (measured), so a booking that arrives meanwhile waits
/// little longer than for a commit.
const COMPACTION_CHUNK: usize = 512;

/// Idempotency answers deleted per transaction: they are the oldest rows of
/// their table, next to each other, and 4096 take about 2 ms (measured).
const FORGET_CHUNK: usize = 4096;

/// Longest a chunk of tidying waits for a moment with nothing to commit.
const TIDY_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

pub struct OrderStore {
    database: Database,
    /// Changes that arrived since the last commit, in arrival order.
    queue: Vec<Persist>,
    /// A `CommitQueued` is on its way: more changes just join the queue.
    commit_scheduled: bool,
    /// Most changes in one transaction, so one batch cannot grow without bound.
    batch_limit: usize,
    /// Rows of the order log that a later row of the same user replaced, found
    /// by recovery, not deleted yet (ascending). Every change appends a row,
    /// so without this the log would grow with every cancellation for good,
    /// and recovery's time with it. Deleted a chunk at a time (see [`Tidy`]).
    superseded: Vec<i64>,
    /// Idempotency answers still to delete: expired, or over the cap on keys.
    forget: Option<ForgetAnswers>,
    /// A `Tidy` is on its way.
    tidy_scheduled: bool,
    /// Rows replaced since the log was last read for them, counted from the
    /// cancellations committed.
    replaced_since_scan: u64,
    /// Rows the order log holds: as recovery read them, plus those committed
    /// since, minus those compacted.
    log_rows: u64,
    /// At this many replaced rows, if they are a quarter of the log or more,
    /// the log is read again (0: only at a start).
    compaction_interval: u64,
    /// The log is being read again, on a thread of its own.
    scanning: bool,
    /// When the last chunk was deleted, or recovery ended.
    last_tidied: Instant,
    /// Per event, the first generation whose changes may still be written.
    /// Changes decided before an event's failed commit build on state that was
    /// never stored, so they are refused without being written.
    valid_from: HashMap<EventId, u64>,
    /// What was committed, for `/metrics`.
    metrics: StoreMetrics,
}

impl OrderStore {
    pub fn new(
        database: Database,
        batch_limit: usize,
        compaction_interval: u64,
        metrics: StoreMetrics,
    ) -> Self {
        OrderStore {
            database,
            queue: Vec::new(),
            commit_scheduled: false,
            batch_limit,
            superseded: Vec::new(),
            forget: None,
            tidy_scheduled: false,
            replaced_since_scan: 0,
            log_rows: 0,
            compaction_interval,
            scanning: false,
            last_tidied: Instant::now(),
            valid_from: HashMap::new(),
            metrics,
        }
    }

    /// Commits everything queued, in transactions of at most `batch_limit`.
    fn commit_all(&mut self) {
        while !self.queue.is_empty() {
            let rest = self.queue.split_off(self.queue.len().min(self.batch_limit));
            let batch = std::mem::replace(&mut self.queue, rest);
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Persist>) {
        let (void, writes): (Vec<Persist>, Vec<Persist>) =
            batch.into_iter().partition(|p| self.is_void(p));
        for persist in void {
            persist.settle(Err(NotStored));
        }
        if writes.is_empty() {
            return;
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
                self.metrics.committed(writes.len(), started.elapsed());
                // One row per answer, in the order the answers were written.
                let mut rows = rows.into_iter();
                for persist in writes {
                    if let Some(change) = &persist.change {
                        self.metrics.stored(change);
                        if let Change::Order { update, .. } = change {
                            self.log_rows += update.rows();
                            self.replaced_since_scan += update.rows_replaced();
                        }
                    }
                    let row = persist.answer.as_ref().and_then(|_| rows.next());
                    persist.settle(Ok(row));
                }
            }
            Err(error) => self.fail(error, writes),
        }
    }

    /// Once enough rows were replaced, and they are a quarter of the log or
    /// more, reads the whole log again for them, in one ordered pass as
    /// recovery does, on a thread of its own: reading a million rows takes
    /// about a second, which commits must not wait for. The read holds each
    /// user's last row for a while, not the events' states. The quarter
    /// bounds the cost: at most four rows read, and three users held, per row
    /// deleted. (A cancelled user keeps one row, so a log where every user
    /// booked and cancelled is half replaced at most.) Rows it finds stay
    /// replaced whatever is committed meanwhile (a user's last row is never
    /// among them), and no row of the log is deleted until it is done: it
    /// starts only once the rows of the last read are all deleted.
    fn scan_later(&mut self, ctx: &mut Context<Self>) {
        if self.compaction_interval == 0
            || self.scanning
            || !self.superseded.is_empty()
            || self.replaced_since_scan < self.compaction_interval
            || self.replaced_since_scan * 4 < self.log_rows
        {
            return;
        }
        self.scanning = true;
        self.replaced_since_scan = 0;
        let (database, store) = (self.database.clone(), ctx.address());
        let reading = std::thread::Builder::new()
            .name("log-compaction".into())
            .spawn(move || {
                let started = Instant::now();
                // Answered even if it panics: else no read would start again.
                let found = catch_unwind(AssertUnwindSafe(|| database.superseded_rows()))
                    .unwrap_or_else(|_| {
                        Err(StorageError::Inconsistent("the read panicked".into()))
                    });
                store.do_send(Scanned(found, started.elapsed()));
            });
        if let Err(error) = reading {
            log::warn!("could not start reading the order log for compaction: {error}");
            self.scanning = false;
        }
    }

    /// Schedules the next chunk of tidying, if any is left.
    fn tidy_later(&mut self, ctx: &mut Context<Self>) {
        let work_left = self.forget.is_some() || !self.superseded.is_empty();
        if work_left && !self.tidy_scheduled {
            self.tidy_scheduled = true;
            ctx.notify(Tidy);
        }
    }

    /// Deletes the next chunk of idempotency answers to forget.
    fn forget_chunk(&mut self, forget: ForgetAnswers) {
        let ForgetAnswers { cutoff, first_kept } = forget;
        match self
            .database
            .forget_answers(cutoff, first_kept, FORGET_CHUNK)
        {
            // A full chunk: there may be more.
            Ok(forgotten) if forgotten == FORGET_CHUNK => self.forget = Some(forget),
            Ok(_) => {}
            // Harmless: the rows stay, and the next minute's housekeeping asks again.
            Err(error) => log::warn!("could not forget idempotency answers: {error}"),
        }
    }

    /// Deletes the next chunk of superseded rows of the order log.
    fn compact_chunk(&mut self) {
        let chunk = self
            .superseded
            .split_off(self.superseded.len().saturating_sub(COMPACTION_CHUNK));
        match self.database.delete_superseded(&chunk) {
            Ok(deleted) => {
                self.metrics.compacted(deleted);
                self.log_rows = self.log_rows.saturating_sub(deleted as u64);
                if self.superseded.is_empty() {
                    // `split_off` kept the whole allocation.
                    self.superseded = Vec::new();
                    log::info!("order log compacted: the superseded rows are deleted");
                }
            }
            Err(error) => {
                // Harmless: the rows stay, and the next read of the log finds them again.
                log::warn!(
                    "compacting the order log failed, stopped until the log is read again: {error}"
                );
                self.superseded = Vec::new();
            }
        }
    }

    fn is_void(&self, persist: &Persist) -> bool {
        persist.origin.as_ref().is_some_and(|origin| {
            self.valid_from
                .get(&origin.event)
                .is_some_and(|valid_from| origin.generation < *valid_from)
        })
    }

    /// After a failed transaction: voids what its events decided since, tells
    /// them to reload, and answers its changes.
    fn fail(&mut self, error: StorageError, writes: Vec<Persist>) {
        self.metrics.failed();
        log::error!(
            "commit of {} changes failed, none stored: {error}",
            writes.len()
        );
        for persist in writes {
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
}

impl Actor for OrderStore {
    type Context = Context<Self>;
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
        self.scan_later(ctx);
        self.tidy_later(ctx);
    }
}

impl Handler<Scanned> for OrderStore {
    type Result = ();

    fn handle(&mut self, Scanned(found, took): Scanned, ctx: &mut Context<Self>) {
        self.scanning = false;
        match found {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                log::info!(
                    "compacting the order log: {} rows are superseded by later ones (read in {took:?})",
                    rows.len()
                );
                self.superseded = rows;
                self.tidy_later(ctx);
            }
            // Harmless: the rows stay until the next read finds them.
            Err(error) => log::warn!("reading the order log for compaction failed: {error}"),
        }
    }
}

impl Handler<Tidy> for OrderStore {
    type Result = ();

    fn handle(&mut self, _: Tidy, ctx: &mut Context<Self>) {
        self.tidy_scheduled = false;
        // Changes that arrived meanwhile go first; their commit schedules the next chunk.
        if !self.queue.is_empty() && self.last_tidied.elapsed() < TIDY_AT_LEAST_EVERY {
            return;
        }
        if let Some(forget) = self.forget.take() {
            self.forget_chunk(forget);
        } else if !self.superseded.is_empty() {
            self.compact_chunk();
        }
        self.last_tidied = Instant::now();
        self.tidy_later(ctx);
    }
}

impl Handler<Reload> for OrderStore {
    type Result = Result<Option<EventState>, NotStored>;

    fn handle(&mut self, Reload { event }: Reload, _: &mut Context<Self>) -> Self::Result {
        self.commit_all();
        self.database.load_event(&event).map_err(|error| {
            log::error!("reloading event {event} failed: {error}");
            NotStored
        })
    }
}

impl Handler<Recover> for OrderStore {
    type Result = Result<Recovered, StorageError>;

    fn handle(&mut self, recover: Recover, ctx: &mut Context<Self>) -> Self::Result {
        let StoredOrders {
            events,
            superseded,
            rows,
        } = self.database.load_all()?;
        self.log_rows = rows;
        let answers = self.database.load_answers(recover.answers_since)?;
        let raw_fingerprints_before = self.database.raw_fingerprints_before()?;
        self.metrics
            .recovered(events.iter().map(|(_, state)| state.summary()));
        if !superseded.is_empty() {
            log::info!(
                "compacting the order log: {} rows are superseded by later ones",
                superseded.len()
            );
            self.superseded = superseded;
        }
        self.last_tidied = Instant::now();
        self.tidy_later(ctx);
        Ok(Recovered {
            events,
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

impl Handler<ForgetAnswers> for OrderStore {
    type Result = ();

    fn handle(&mut self, forget: ForgetAnswers, ctx: &mut Context<Self>) {
        // A later request covers an earlier one: both bounds only grow.
        self.forget = Some(match self.forget.take() {
            Some(pending) => ForgetAnswers {
                cutoff: pending.cutoff.max(forget.cutoff),
                first_kept: pending.first_kept.max(forget.first_kept),
            },
            None => forget,
        });
        self.tidy_later(ctx);
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

impl Handler<Flush> for OrderStore {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.commit_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use actix_web::test::TestRequest;
    use actix_web::HttpRequest;

    use super::*;
    use crate::booking::{OrderUpdate, Standing};
    use crate::configuration::Settings;
    use crate::idempotency::{Begin, Idempotency};

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
                done,
                slot: backlog.reserve().expect("room"),
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

    /// A database whose event "gig" had `churned` users ("u0", "u1"...) book
    /// and cancel, and a count of these users' rows in its order log.
    fn churned_database(
        dir: &tempfile::TempDir,
        churned: usize,
    ) -> (Database, impl Fn() -> i64 + Clone) {
        let path = dir.path().join("t.db");
        let settings = Settings {
            database: path.display().to_string(),
            ..Settings::default()
        };
        let database = Database::open(&settings).unwrap();
        let mut changes = vec![Change::CreateEvent {
            event: gig(),
            total_tickets: 1000,
        }];
        for user in 0..churned {
            let user: Arc<str> = format!("u{user}").into();
            changes.push(order(OrderUpdate::Booked(user.clone())));
            changes.push(order(OrderUpdate::Cancelled(user)));
        }
        database.commit(&changes, []).unwrap();
        let rows = move || -> i64 {
            let db = rusqlite::Connection::open(&path).unwrap();
            let count = "SELECT COUNT(*) FROM order_log WHERE user_id GLOB 'u[0-9]*'";
            db.query_row(count, [], |row| row.get(0)).unwrap()
        };
        (database, rows)
    }

    fn gig() -> EventId {
        EventId::parse("gig").unwrap()
    }

    fn order(update: OrderUpdate) -> Change {
        Change::Order {
            event: gig(),
            update,
        }
    }

    #[actix_web::test]
    async fn compaction_waits_for_the_changes_queued_and_then_deletes_every_superseded_row() {
        const CHURNED: usize = 600; // two chunks
        let dir = tempfile::tempdir().unwrap();
        let (database, rows) = churned_database(&dir, CHURNED);
        let store = OrderStore::new(database, 64, 0, StoreMetrics::new()).start();
        let recovered = store.send(Recover { answers_since: 0 });
        // Queued behind recovery, so ahead of the compaction it schedules.
        let (heard, hear) = futures::channel::oneshot::channel();
        let counted = rows.clone();
        store.do_send(Persist {
            change: Some(order(OrderUpdate::Booked("late".into()))),
            answer: None,
            origin: None,
            done: Box::new(move |outcome| {
                let _ = heard.send((outcome.is_ok(), counted()));
            }),
            slot: Backlog::new(1).reserve().unwrap(),
        });
        recovered.await.unwrap().unwrap();
        let all = 2 * CHURNED as i64;
        assert_eq!(
            hear.await.unwrap(),
            (true, all),
            "nothing deleted before it"
        );

        for _ in 0..200 {
            if rows() == all - CHURNED as i64 {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rows(), all - CHURNED as i64, "one row per user left");
        let state = store.send(Reload { event: gig() }).await.unwrap();
        let state = state.unwrap().expect("the event is stored");
        assert_eq!(state.standing("u0"), Some(Standing::Cancelled));
        assert_eq!(state.standing("late"), Some(Standing::Booked));
    }

    #[actix_web::test]
    async fn compaction_goes_on_under_a_load_that_never_leaves_the_queue_empty() {
        const CHURNED: usize = 4 * COMPACTION_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        let (database, rows) = churned_database(&dir, CHURNED);
        // On a thread of its own, as in the server: changes arrive during its commits.
        let thread = Arbiter::new();
        let store = OrderStore::start_in_arbiter(&thread.handle(), move |_| {
            OrderStore::new(database, 64, 0, StoreMetrics::new())
        });
        store
            .send(Recover { answers_since: 0 })
            .await
            .unwrap()
            .unwrap();
        // Recovery's first chunk runs at once. Then the store is saturated for
        // 3.5 s: with room for many transactions of 64 in the backlog, changes
        // arrive while it commits, so whenever it looks, changes wait. A chunk
        // waits a second for a moment with nothing to commit, and runs anyway.
        let backlog = Backlog::new(4096);
        let started = Instant::now();
        let mut booked = 0;
        while started.elapsed() < Duration::from_millis(3500) {
            let Some(slot) = backlog.reserve() else {
                std::thread::sleep(Duration::from_micros(10));
                continue;
            };
            store.do_send(Persist {
                change: Some(order(OrderUpdate::Booked(format!("b{booked}").into()))),
                answer: None,
                origin: None,
                done: Box::new(|_| {}),
                slot,
            });
            booked += 1;
        }
        // Counted at once, while changes still wait: once none does, the
        // store deletes a chunk after each commit.
        let deleted = 2 * CHURNED as i64 - rows();
        assert!(
            deleted >= 3 * COMPACTION_CHUNK as i64,
            "{deleted} of {CHURNED} superseded rows deleted under load"
        );
        thread.stop();
    }
}
