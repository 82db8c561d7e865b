//! Housekeeping: the store brings what is derived from the order log in
//! batches up to date (SQLite's index of it by event, PostgreSQL's events'
//! counts), once a second while it commits and before an event is read
//! (`OrderStore::catch_up`). And when it has nothing to commit, it
//! deletes rows no longer needed, a chunk at a time ([`Tidy`]): the answers of idempotent
//! requests that expired, and rows of the order log that later ones
//! replaced, found when an event is read into memory ([`Compact`]) and by a
//! read of the whole log once cancellations have replaced enough of it
//! (`OrderStore::scan_later`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::OrderStore;
use crate::storage::StorageError;

/// Deletes the stored answers of idempotent requests stored before `cutoff`
/// (unix seconds) or in a row before `first_kept` (over the cap on keys),
/// a chunk at a time (see [`Tidy`]).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct ForgetAnswers {
    pub cutoff: i64,
    pub first_kept: i64,
}

/// From the thread that read the order log again: the rows that later ones
/// replaced, in ascending order, and how long the read took.
#[derive(Message)]
#[rtype(result = "()")]
struct Scanned(Result<Vec<i64>, StorageError>, Duration);

/// Rows of an event's log that later ones replaced, as its activation read
/// them: to be deleted (see [`Tidy`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Compact {
    pub rows: Vec<i64>,
}

/// Deletes the next chunk of rows no longer needed: idempotency answers to
/// forget, then rows of the order log found superseded by an event's
/// activation or a read of the whole log (sent to itself). A chunk runs when nothing waits to be
/// committed, or if the last one ran a second ago or more, so that it goes on
/// under any load.
#[derive(Message)]
#[rtype(result = "()")]
struct Tidy;

/// Superseded rows deleted per transaction: few enough that a booking that
/// arrives meanwhile waits little longer than for a commit, even when each row
/// is on a page of its own (timings in docs/performance.md).
const COMPACTION_CHUNK: usize = 512;

/// Idempotency answers deleted per transaction: more than superseded rows,
/// since they are the oldest rows of their table, next to each other, so a
/// chunk touches few pages (timings in docs/performance.md).
const FORGET_CHUNK: usize = 4096;

/// Longest a chunk of tidying waits for a moment with nothing to commit.
const TIDY_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// How often the store catches up with the log while it commits: the
/// longer, the more rows of each event share a page of SQLite's index, or
/// a move of its counts in PostgreSQL, and the more rows a read takes in
/// that were not caught up with yet.
pub(super) const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

impl OrderStore {
    /// Catches up with the rows committed since the last time
    /// (`Database::catch_up`), if that was `CATCH_UP_EVERY` ago or `now`.
    pub(super) fn catch_up(&mut self, now: bool) {
        if !now && self.last_caught_up.elapsed() < CATCH_UP_EVERY {
            return;
        }
        self.last_caught_up = Instant::now();
        // Harmless: reads take in the rows not caught up with yet anyway, and the next time takes them.
        if let Err(error) = self.database.catch_up() {
            log::warn!("could not catch up with the order log's new rows: {error}");
        }
    }

    /// Once enough rows were replaced, and they are a quarter of the log or
    /// more, reads the whole log for them, in one ordered pass, on a thread
    /// of its own: about a second per million rows, which commits must not
    /// wait for. The read holds each
    /// user's last row for a while, not the events' states. The quarter
    /// bounds the cost: at most four rows read, and three users held, per row
    /// deleted. (A cancelled user keeps one row, so a log where every user
    /// booked and cancelled is half replaced at most.) Rows it finds stay
    /// replaced whatever is committed meanwhile (a user's last row is never
    /// among them), and no row of the log is deleted until it is done: it
    /// starts only once the rows of the last read are all deleted.
    pub(super) fn scan_later(&mut self, ctx: &mut Context<Self>) {
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

    /// Starts from what recovery read: the order log holds at most `rows`.
    pub(super) fn tidy_after_recovery(&mut self, rows: u64, ctx: &mut Context<Self>) {
        self.log_rows = rows;
        self.last_tidied = Instant::now();
        self.tidy_later(ctx);
    }

    /// Schedules the next chunk of tidying, if any is left.
    pub(super) fn tidy_later(&mut self, ctx: &mut Context<Self>) {
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
                    log::debug!("order log compacted: the superseded rows are deleted");
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
                self.superseded.extend(rows);
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

impl Handler<Compact> for OrderStore {
    type Result = ();

    fn handle(&mut self, Compact { rows }: Compact, ctx: &mut Context<Self>) {
        self.superseded.extend(rows);
        self.tidy_later(ctx);
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

#[cfg(test)]
mod tests {
    use crate::actors::StatusFeed;
    use crate::ids::UserKey;

    use super::*;
    use crate::actors::order_store::{Backlog, Persist, Recover, Reload};
    use crate::booking::{EventSettings, OrderUpdate, Standing};
    use crate::configuration::Settings;
    use crate::ids::EventId;
    use crate::storage::{Change, Database};
    use crate::telemetry::StoreMetrics;

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
            settings: EventSettings::new(1000),
        }];
        for user in 0..churned {
            let user: UserKey = format!("u{user}").into();
            changes.push(order(OrderUpdate::Booked(user.clone())));
            changes.push(order(OrderUpdate::Cancelled {
                user,
                promoted: None,
            }));
        }
        database.commit(&changes, []).unwrap();
        let rows = move || -> i64 {
            let db = rusqlite::Connection::open(&path).unwrap();
            let count = "SELECT COUNT(*) FROM order_log WHERE user_id GLOB 'u[0-9]*'";
            db.query_row(count, [], |row| row.get(0)).unwrap()
        };
        (database, rows)
    }

    /// The rows an activation of "gig" finds superseded, as it hands them to the store.
    fn superseded_of_gig(database: &Database) -> Vec<i64> {
        let (_, superseded) = database.load_event(&gig()).unwrap().expect("stored");
        superseded
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
        let superseded = superseded_of_gig(&database);
        let store =
            OrderStore::new(database, 64, 0, StoreMetrics::new(), StatusFeed::new(0)).start();
        let recovered = store.send(Recover { answers_since: 0 });
        store.do_send(Compact { rows: superseded });
        // Queued behind the rows to delete, so ahead of the compaction they schedule.
        let (heard, hear) = futures::channel::oneshot::channel();
        let counted = rows.clone();
        store.do_send(Persist {
            change: Some(order(OrderUpdate::Booked("late".into()))),
            answer: None,
            origin: None,
            published: None,
            standings: Vec::new(),
            done: Box::new(move |outcome| {
                let _ = heard.send((outcome.is_ok(), counted()));
            }),
            slot: Backlog::new(1).reserve(),
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
        let (state, _) = state.unwrap().expect("the event is stored");
        assert_eq!(state.standing("u0"), Some(Standing::Cancelled));
        assert_eq!(state.standing("late"), Some(Standing::Booked));
    }

    #[actix_web::test]
    async fn compaction_goes_on_under_a_load_that_never_leaves_the_queue_empty() {
        const CHURNED: usize = 4 * COMPACTION_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        let (database, rows) = churned_database(&dir, CHURNED);
        let superseded = superseded_of_gig(&database);
        // On a thread of its own, as in the server: changes arrive during its commits.
        let thread = Arbiter::new();
        let store = OrderStore::start_in_arbiter(&thread.handle(), move |_| {
            OrderStore::new(database, 64, 0, StoreMetrics::new(), StatusFeed::new(0))
        });
        store
            .send(Recover { answers_since: 0 })
            .await
            .unwrap()
            .unwrap();
        store.send(Compact { rows: superseded }).await.unwrap();
        // The first chunk runs at once. Then the store is saturated for
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
                published: None,
                standings: Vec::new(),
                done: Box::new(|_| {}),
                slot: Some(slot),
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
