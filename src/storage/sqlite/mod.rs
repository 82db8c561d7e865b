//! SQLite (`storage.backend = "sqlite"`, the default): one transaction per
//! batch of changes, and reads of one event, of the events' counts and of
//! idempotency answers; the schema and its migrations in [`schema`], a start
//! on a full disk in [`room`].
//!
//! A transaction writes the end of the log, and the rows of the events it
//! holds (their counts); the log's index by event is written in batches
//! (`catch_up`), so that a commit of many events' bookings does not
//! write a page of the index for each (docs/performance.md has what that
//! costs).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::replay::{EventRows, Loader};
use super::{
    settings_columns, waiting_list_of, Change, Storage, StorageError, StoredEvent, Totals,
};
use crate::booking::{CountsMoved, EventSettings, EventState};
use crate::configuration::{Settings, Synchronous};
use crate::idempotency::{Answer, KeyId, StoredAnswer, StoredKey};
use crate::ids::EventId;
use room::Room;
use schema::migrate;

mod room;
pub(super) mod schema;

/// Room the readiness probe asks for, in pages: a few bookings' worth.
const PROBE_PAGES: i64 = 4;

/// Connections the pool keeps open: the store's, activations' reads and
/// the probes'. Each caches up to about 2 MB of pages (SQLite's default).
const POOL_SIZE: u32 = 4;

/// A pool of SQLite connections, each with the configured pragmas.
pub struct SqliteStorage {
    pool: r2d2::Pool<SqliteConnectionManager>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(settings: &Settings) -> Result<Self, StorageError> {
        let path = Path::new(&settings.database);
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(folder) = folder {
            std::fs::create_dir_all(folder).map_err(|source| StorageError::Folder {
                path: folder.display().to_string(),
                source,
            })?;
        }
        let pragmas = Pragmas {
            synchronous: settings.synchronous,
            busy_timeout: Duration::from_millis(settings.busy_timeout_ms),
            max_page_count: settings.max_page_count,
        };
        let room = Room {
            folder: folder.unwrap_or(Path::new(".")),
            max_page_count: settings.max_page_count,
        };
        // A plain first connection reports a bad path at once; the pool would retry for its timeout.
        let first = room.wait_for(|| {
            let mut first = Connection::open(path)?;
            pragmas.apply(&mut first)?;
            migrate(&mut first)?;
            Ok(first)
        })?;

        let manager =
            SqliteConnectionManager::file(path).with_init(move |conn| pragmas.apply(conn));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            // A connection to a file does not go stale like one to a server,
            // and testing it at every checkout would cost every commit a statement.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        // Closed only now: the last connection to close deletes the -shm
        // file, which the pool's would then have to write again.
        drop(first);
        Ok(SqliteStorage { pool })
    }
}

impl Storage for SqliteStorage {
    /// Writes `changes` and the `answers` of idempotent requests in one
    /// transaction: all of them are stored, or none. Returns the answers'
    /// rows (`seq`), in the order given.
    fn commit_batch(
        &self,
        changes: &[&Change],
        answers: &[&StoredAnswer],
    ) -> Result<Vec<i64>, StorageError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut create = tx.prepare_cached(
                "INSERT INTO events
                     (id, total_tickets, sales_open, waiting_list, offer_secs, hold_secs, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                     (SELECT coalesce(max(created), 0) + 1 FROM events))",
            )?;
            let mut configure = tx.prepare_cached(
                "UPDATE events SET total_tickets = ?2, sales_open = ?3, waiting_list = ?4,
                     offer_secs = ?5, hold_secs = ?6
                 WHERE id = ?1",
            )?;
            let mut append = tx.prepare_cached(
                "INSERT INTO order_log (event_id, user_id, status, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            // Each event's counts (and version, by its changes) move once per
            // transaction, however many of its changes it holds.
            let mut counts: HashMap<&str, (CountsMoved, i64)> = HashMap::new();
            for change in changes {
                let event = change.event().as_str();
                let settings_written = match change {
                    Change::CreateEvent { settings, .. } => Some((&mut create, settings)),
                    Change::Configure { settings, .. } => Some((&mut configure, settings)),
                    Change::Order { .. } => None,
                };
                if let Some((statement, settings)) = settings_written {
                    let (total, open, mode, offer_secs, hold_secs) = settings_columns(settings);
                    statement.execute(params![event, total, open, mode, offer_secs, hold_secs])?;
                }
                if !matches!(change, Change::CreateEvent { .. }) {
                    let (moved, changes) = counts.entry(event).or_default();
                    *moved = moved.and(change.counts());
                    *changes += 1;
                }
                for row in change.log_rows() {
                    append.execute(params![event, row.user, row.status, row.expires_at])?;
                }
            }
            let mut count = tx.prepare_cached(
                "UPDATE events SET booked = booked + ?2, held = held + ?3, waiting = waiting + ?4,
                     version = version + ?5
                 WHERE id = ?1",
            )?;
            for (event, (moved, changes)) in counts {
                let (booked, held, waiting) = (moved.booked, moved.held, moved.waiting);
                count.execute(params![event, booked, held, waiting, changes])?;
            }
        }
        let mut rows = Vec::new();
        {
            let mut remember = tx.prepare_cached(
                "INSERT INTO idempotency (scope, key, fingerprint, status, body, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for stored in answers {
                let StoredAnswer {
                    id,
                    fingerprint,
                    answer,
                    stored_at,
                } = stored;
                remember.execute(params![
                    id.scope,
                    id.key,
                    fingerprint,
                    answer.status,
                    &answer.body[..],
                    stored_at
                ])?;
                rows.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(rows)
    }

    /// The readiness probe: commits a row of a few pages (more than a
    /// booking writes), through the WAL and its fsync, and deletes it again.
    /// Fails when the database is full (`max_page_count`, or a disk with no
    /// room for those pages in the WAL) or cannot be written at all. Pages
    /// only tried in a savepoint would not do: they never reach the disk.
    fn check_writable(&self) -> Result<(), StorageError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO readiness (id, checked_at, room)
             VALUES (2, 0, zeroblob(?1 * (SELECT page_size FROM pragma_page_size())))",
            [PROBE_PAGES],
        )?;
        tx.execute(
            "UPDATE readiness SET checked_at = unixepoch() WHERE id = 1",
            [],
        )?;
        tx.commit()?;
        conn.execute("DELETE FROM readiness WHERE id = 2", [])?;
        Ok(())
    }

    /// The first row of `idempotency` whose fingerprint was taken over the
    /// canonical request; those before were taken over the body as sent.
    fn raw_fingerprints_before(&self) -> Result<i64, StorageError> {
        let conn = self.pool.get()?;
        Ok(conn.query_row("SELECT raw_before FROM fingerprints", [], |row| row.get(0))?)
    }

    /// The keys of idempotent requests whose answers were stored at or after
    /// `cutoff` (unix seconds), oldest first; the answers stay on disk.
    fn load_answers(&self, cutoff: i64) -> Result<Vec<StoredKey>, StorageError> {
        let conn = self.pool.get()?;
        let mut query = conn.prepare(
            "SELECT scope, key, fingerprint, seq, stored_at FROM idempotency
             WHERE stored_at >= ?1 ORDER BY seq",
        )?;
        let rows = query.query_map([cutoff], |row| {
            Ok(StoredKey {
                id: KeyId {
                    scope: row.get(0)?,
                    key: row.get(1)?,
                },
                fingerprint: row.get::<_, Vec<u8>>(2)?.try_into().unwrap_or_default(),
                seq: row.get(3)?,
                stored_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The answer stored in row `seq`, to replay it; `None` once it expired.
    fn load_answer(&self, seq: i64) -> Result<Option<Answer>, StorageError> {
        let conn = self.pool.get()?;
        let mut query =
            conn.prepare_cached("SELECT status, body FROM idempotency WHERE seq = ?1")?;
        let answer = query
            .query_row([seq], |row| {
                Ok(Answer {
                    status: row.get(0)?,
                    body: row.get::<_, Vec<u8>>(1)?.into(),
                })
            })
            .optional()?;
        Ok(answer)
    }

    /// Deletes up to `limit` of the answers stored before `cutoff` (unix
    /// seconds) or in a row before `first_kept`, and returns how many. Rows
    /// are in time order, so these are the oldest: a caller deletes a chunk at
    /// a time until one is not full, and no index is needed.
    fn forget_answers(
        &self,
        cutoff: i64,
        first_kept: i64,
        limit: usize,
    ) -> Result<usize, StorageError> {
        let conn = self.pool.get()?;
        // Only the oldest `limit` rows are looked at: the ones to forget come
        // first, and a scan past them would read the whole table.
        let mut forget = conn.prepare_cached(
            "DELETE FROM idempotency WHERE (stored_at < ?1 OR seq < ?2)
             AND seq IN (SELECT seq FROM idempotency ORDER BY seq LIMIT ?3)",
        )?;
        Ok(forget.execute(params![cutoff, first_kept, limit as i64])?)
    }

    /// The rows of the log that a later row of the same user replaced
    /// (ascending), from one pass over the whole log that holds only each
    /// user's last row, not the events' states.
    fn superseded_rows(&self) -> Result<Vec<i64>, StorageError> {
        let conn = self.pool.get()?;
        Ok(read_log(&conn, LogSchema::Current)?.superseded())
    }

    /// Deletes `rows` of the order log in one transaction; returns how many
    /// were there. Only for rows that [`superseded_rows`](Self::superseded_rows)
    /// or [`load_event`](Self::load_event) named: a later row of the same user
    /// replaced each, so an event reads the same state without them.
    fn delete_superseded(&self, rows: &[i64]) -> Result<usize, StorageError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted = 0;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM order_log WHERE seq = ?1 RETURNING event_id")?;
            let mut unindex =
                tx.prepare_cached("DELETE FROM orders_by_event WHERE event_id = ?1 AND seq = ?2")?;
            for seq in rows {
                let event: Option<String> = delete.query_row([seq], |row| row.get(0)).optional()?;
                if let Some(event) = event {
                    deleted += 1;
                    unindex.execute(params![event, seq])?;
                }
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Every stored event, its booked and held tickets and its waiting
    /// users, as committed: for the gauges of `/metrics`, without reading any order.
    fn totals(&self) -> Result<Totals, StorageError> {
        let conn = self.pool.get()?;
        Ok(conn.query_row(
            "SELECT count(*), coalesce(sum(booked), 0), coalesce(sum(held), 0),
                 coalesce(sum(waiting), 0) FROM events",
            [],
            |row| {
                let count = |column| row.get::<_, i64>(column).map(|n| n.max(0) as u64);
                Ok(Totals {
                    events: count(0)?,
                    booked: count(1)?,
                    held: count(2)?,
                    waiting: count(3)?,
                })
            },
        )?)
    }

    /// Through the partial index `events_holding`: no scan of every event.
    fn events_with_holds(&self) -> Result<Vec<EventId>, StorageError> {
        let conn = self.pool.get()?;
        let mut query = conn.prepare("SELECT id FROM events WHERE held > 0 ORDER BY created")?;
        let rows = query.query_map([], |row| Ok(EventId::stored(row.get_ref(0)?.as_str()?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` events created after the one in place `after` of the
    /// creation order (0: from the first), in that order, with their counts
    /// as committed. Events created meanwhile come after every one listed.
    fn list_events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StorageError> {
        let conn = self.pool.get()?;
        let mut query = conn.prepare_cached(&format!(
            "SELECT {LISTED}, {SETTINGS} FROM events
             WHERE created > ?1 ORDER BY created LIMIT ?2"
        ))?;
        let mut rows = query.query(params![after, limit])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(stored_event_of(row)?);
        }
        Ok(events)
    }

    fn stored_event(&self, event: &EventId) -> Result<Option<StoredEvent>, StorageError> {
        let conn = self.pool.get()?;
        let mut query = conn.prepare_cached(&format!(
            "SELECT {LISTED}, {SETTINGS} FROM events WHERE id = ?1"
        ))?;
        let mut rows = query.query([event.as_str()])?;
        rows.next()?.map(stored_event_of).transpose()
    }

    /// At least as many rows as the order log holds, read from its first
    /// and last row alone (compaction leaves gaps between them).
    fn log_rows_at_most(&self) -> Result<u64, StorageError> {
        let conn = self.pool.get()?;
        let rows: i64 = conn.query_row(
            // Two subqueries: SQLite reads min() or max() alone from the
            // rowid's ends, but scans the table for both in one.
            "SELECT coalesce((SELECT max(seq) FROM order_log) - (SELECT min(seq) FROM order_log) + 1, 0)",
            [],
            |row| row.get(0),
        )?;
        Ok(rows.max(0) as u64)
    }

    /// Empties the page caches of the connections no one is using (`PRAGMA
    /// shrink_memory`), for when what they hold is no longer read: pages of
    /// events that left memory. Each refills from the file as it reads.
    fn release_memory(&self) {
        let idle: Vec<_> = std::iter::from_fn(|| self.pool.try_get())
            .take(POOL_SIZE as usize)
            .collect();
        for conn in &idle {
            if let Err(error) = conn.execute_batch("PRAGMA shrink_memory") {
                log::debug!("could not empty a connection's page cache: {error}");
            }
        }
    }

    /// Adds the rows of the order log committed since the last call to its
    /// index by event (`orders_by_event`), in one transaction, and returns
    /// how many. Sorted by event first, so that each event's new rows go onto
    /// its pages together: a batch of many commits writes about a page per
    /// event, where indexing each commit's rows as it is written would cost
    /// one per booking. Reads are right whenever it runs (see
    /// [`load_event`](Self::load_event)); it only keeps them short.
    fn catch_up(&self) -> Result<u64, StorageError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let indexed = tx.execute(
            "INSERT INTO orders_by_event (event_id, seq)
             SELECT event_id, seq FROM order_log
             WHERE seq > (SELECT through FROM orders_indexed) ORDER BY event_id, seq",
            [],
        )?;
        if indexed > 0 {
            tx.execute(
                "UPDATE orders_indexed SET through = (SELECT max(seq) FROM order_log)",
                [],
            )?;
        }
        tx.commit()?;
        Ok(indexed as u64)
    }

    /// Reads one event as it is stored, and the rows of its log that later
    /// ones replaced (to be deleted: see [`delete_superseded`](Self::delete_superseded));
    /// `None` if it was never committed. Reads only that event's rows, in
    /// order: those in the index by event, then its rows among those not
    /// indexed yet (the last batch's worth at most), in one snapshot. The time
    /// it takes follows the event's orders.
    fn load_event(&self, event: &EventId) -> Result<Option<(EventState, Vec<i64>)>, StorageError> {
        let mut conn = self.pool.get()?;
        // One read transaction: a `catch_up` between the two reads of
        // the log would move rows from the second to the first unseen.
        let conn = conn.transaction()?;
        let settings = conn
            .query_row(
                &format!("SELECT {SETTINGS}, booked + waiting + held FROM events WHERE id = ?1"),
                [event.as_str()],
                |row| Ok((settings_of(row, 0), row.get::<_, i64>(6))),
            )
            .optional()?;
        let Some((settings, users)) = settings else {
            return Ok(None);
        };
        let (version, settings) = settings?;
        let mut loader = Loader::default();
        let users = usize::try_from(users?).unwrap_or(0);
        loader.event(event.as_str(), settings, version, users);
        // CROSS JOIN: SQLite keeps the left table as the outer loop.
        let indexed = "SELECT o.seq, o.user_id, o.status, o.expires_at
             FROM orders_by_event i CROSS JOIN order_log o ON o.seq = i.seq
             WHERE i.event_id = ?1 ORDER BY i.seq";
        let not_yet = "SELECT seq, user_id, status, expires_at FROM order_log
             WHERE seq > (SELECT through FROM orders_indexed) AND event_id = ?1 ORDER BY seq";
        let mut log = EventRows::with_capacity(users);
        for query in [indexed, not_yet] {
            let mut statement = conn.prepare_cached(query)?;
            let mut rows = statement.query([event.as_str()])?;
            while let Some(row) = rows.next()? {
                log.push(
                    row.get(0)?,
                    row.get_ref(1)?.as_str()?,
                    row.get_ref(2)?.as_str()?,
                    row.get(3)?,
                )?;
            }
        }
        drop(conn);
        loader.event_rows(event.as_str(), log)?;
        let mut stored = loader.finish()?;
        Ok(stored
            .events
            .pop()
            .map(|(_, state)| (state, stored.superseded)))
    }
}

/// The columns of `events` that hold its version and settings, in the
/// order [`settings_of`] reads them.
const SETTINGS: &str = "version, total_tickets, sales_open, waiting_list, offer_secs, hold_secs";

/// The version and settings in the columns [`SETTINGS`] of `row`, from
/// column `first` on.
fn settings_of(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> Result<(u64, EventSettings), StorageError> {
    let settings = EventSettings {
        total_tickets: row.get(first + 1)?,
        sales_open: row.get(first + 2)?,
        waiting_list: waiting_list_of(row.get_ref(first + 3)?.as_str()?, row.get(first + 4)?)?,
        hold_secs: row.get(first + 5)?,
    };
    Ok((row.get::<_, i64>(first)?.max(0) as u64, settings))
}

/// The columns of an event as listed, in the order [`stored_event_of`] reads them.
const LISTED: &str = "id, created, booked, held, waiting";

/// The event in the columns `LISTED`, then [`SETTINGS`], of `row`.
fn stored_event_of(row: &rusqlite::Row<'_>) -> Result<StoredEvent, StorageError> {
    let (version, settings) = settings_of(row, 5)?;
    Ok(StoredEvent {
        id: EventId::stored(row.get_ref(0)?.as_str()?),
        created: row.get(1)?,
        version,
        booked_tickets: row.get(2)?,
        held_tickets: row.get(3)?,
        waiting: row.get::<_, i64>(4)?.max(0) as u64,
        settings,
    })
}

/// One pass over the log, newest row first: each user's last row, and the
/// rows replaced. `LogSchema::BeforeHolds` for a database of schema
/// version 6 or before, which has neither `expires_at` nor the events'
/// settings but their tickets (a migration reads it).
fn read_log(conn: &Connection, schema: LogSchema) -> Result<Loader, StorageError> {
    let mut loader = Loader::default();
    let (settings, expires_at) = match schema {
        LogSchema::Current => (SETTINGS, "expires_at"),
        LogSchema::BeforeHolds => ("0, total_tickets, 1, 'assign', NULL, NULL", "NULL"),
    };
    let mut events = conn.prepare(&format!("SELECT id, {settings} FROM events"))?;
    let mut rows = events.query([])?;
    while let Some(row) = rows.next()? {
        let (version, settings) = settings_of(row, 1)?;
        loader.event(row.get_ref(0)?.as_str()?, settings, version, 0);
    }
    let mut log = conn.prepare(&format!(
        "SELECT seq, event_id, user_id, status, {expires_at} FROM order_log ORDER BY seq DESC"
    ))?;
    let mut rows = log.query([])?;
    while let Some(row) = rows.next()? {
        let (seq, event, user, status) = (
            row.get(0)?,
            row.get_ref(1)?.as_str()?,
            row.get_ref(2)?.as_str()?,
            row.get_ref(3)?,
        );
        loader.order(seq, event, user, status.as_str()?, row.get(4)?)?;
    }
    Ok(loader)
}

/// The columns of the log that [`read_log`] reads.
#[derive(Clone, Copy)]
enum LogSchema {
    Current,
    BeforeHolds,
}

/// Settings applied to every connection, the pool's and the first.
#[derive(Clone, Copy)]
struct Pragmas {
    synchronous: Synchronous,
    busy_timeout: Duration,
    max_page_count: u32,
}

impl Pragmas {
    fn apply(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        // journal_mode answers with a row, which `execute` would refuse; pragma_update reads it.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", self.synchronous.pragma_value())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(self.busy_timeout)?;
        if self.max_page_count > 0 {
            conn.pragma_update(None, "max_page_count", self.max_page_count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::UserKey;

    use super::schema::SCHEMA;
    use super::*;
    use crate::booking::{OrderUpdate, Promotion, Standing, UtcMillis, WaitingListMode};
    use crate::storage::Database;

    fn settings(dir: &tempfile::TempDir) -> Settings {
        Settings {
            database: dir.path().join("t.db").display().to_string(),
            ..Settings::default()
        }
    }

    fn order(event: &EventId, update: OrderUpdate) -> Change {
        Change::Order {
            event: event.clone(),
            update,
        }
    }

    #[test]
    fn committed_changes_come_back_with_the_queue_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&settings(&dir)).unwrap();
        let gig = EventId::parse("gig").unwrap();
        let user = |name: &str| UserKey::from(name);
        let changes = [
            Change::CreateEvent {
                event: gig.clone(),
                settings: EventSettings::new(1),
            },
            order(&gig, OrderUpdate::Booked(user("a"))),
            order(&gig, OrderUpdate::Waiting(user("z"))),
            order(&gig, OrderUpdate::Waiting(user("b"))),
            order(&gig, OrderUpdate::Waiting(user("m"))),
            order(
                &gig,
                OrderUpdate::Cancelled {
                    user: user("a"),
                    promoted: Some(Promotion::Booked(user("z"))),
                },
            ),
            order(&gig, OrderUpdate::LeftWaitingList(user("b"))),
        ];
        db.commit(&changes, []).unwrap();
        // Read below partly by the index by event, partly from the rows after it.
        assert_eq!(db.catch_up().unwrap(), 7);
        // A cancelled user who books again goes to the back.
        db.commit(&[order(&gig, OrderUpdate::Waiting(user("b")))], [])
            .unwrap();
        let (state, superseded) = db.load_event(&gig).unwrap().expect("stored");
        let state = &state;
        assert_eq!(state.standing("z"), Some(Standing::Booked));
        assert_eq!(state.standing("a"), Some(Standing::Cancelled));
        assert_eq!(state.standing("m"), Some(Standing::Waiting { position: 1 }));
        assert_eq!(state.standing("b"), Some(Standing::Waiting { position: 2 }));
        // The counts kept beside the event are those the log replays to.
        let listed = db.list_events(0, 10).unwrap();
        assert_eq!(
            (listed[0].booked_tickets, listed[0].waiting),
            (
                state.summary().booked_tickets,
                state.summary().waiting as u64
            )
        );
        assert_eq!(
            db.totals().unwrap(),
            Totals {
                events: 1,
                booked: 1,
                held: 0,
                waiting: 2
            }
        );

        // Rows 1-8: a booked, z, b and m waiting, a cancelled and z booked,
        // b cancelled, b waiting again. Each user's last row is the state.
        assert_eq!(superseded, [1, 2, 3, 7]);
        assert_eq!(db.log_rows_at_most().unwrap(), 8);
        // The read of the whole log for a running server's compaction finds the same.
        assert_eq!(db.superseded_rows().unwrap(), [1, 2, 3, 7]);
        assert_eq!(db.delete_superseded(&superseded).unwrap(), 4);
        assert_eq!(db.catch_up().unwrap(), 1, "row 8");
        assert_eq!(db.catch_up().unwrap(), 0);
        // The index lost the deleted rows with them.
        let conn = Connection::open(&settings(&dir).database).unwrap();
        let mut indexed = conn.prepare("SELECT seq FROM orders_by_event").unwrap();
        let indexed: Vec<i64> = indexed
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexed, [4, 5, 6, 8]);
        let (compacted, none) = db.load_event(&gig).unwrap().expect("stored");
        assert!(none.is_empty());
        let seen = |state: &EventState| ["a", "b", "m", "z"].map(|name| state.standing(name));
        assert_eq!(seen(&compacted), seen(state));
        assert_eq!(compacted.summary(), state.summary());
    }

    #[test]
    fn a_failing_change_rolls_back_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&settings(&dir)).unwrap();
        let gig = EventId::parse("gig").unwrap();
        let unknown = EventId::parse("unknown").unwrap();
        let changes = [
            Change::CreateEvent {
                event: gig.clone(),
                settings: EventSettings::new(1),
            },
            order(&unknown, OrderUpdate::Booked(UserKey::from("a"))),
        ];
        assert!(matches!(
            db.commit(&changes, []),
            Err(StorageError::Sqlite(_))
        ));
        assert!(db.load_event(&gig).unwrap().is_none());
    }

    #[test]
    fn answers_are_stored_with_their_transaction_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&settings(&dir)).unwrap();
        let answer = |key: &str, stored_at| StoredAnswer {
            id: KeyId {
                scope: String::new(),
                key: key.into(),
            },
            fingerprint: [7; 32],
            answer: Answer {
                status: 409,
                body: b"{}".to_vec().into(),
            },
            stored_at,
        };
        let rows = db
            .commit([], [&answer("old", 100), &answer("new", 200)])
            .unwrap();
        // A failed transaction stores no answer either.
        let unknown = EventId::parse("unknown").unwrap();
        let change = order(&unknown, OrderUpdate::Booked(UserKey::from("a")));
        assert!(db.commit([&change], [&answer("lost", 300)]).is_err());
        let keys = |stored: Vec<StoredKey>| {
            stored
                .into_iter()
                .map(|k| (k.id.key, k.seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(db.load_answers(0).unwrap()),
            [("old".to_string(), rows[0]), ("new".to_string(), rows[1])]
        );
        assert_eq!(db.forget_answers(150, 0, 512).unwrap(), 1);
        assert_eq!(
            keys(db.load_answers(0).unwrap()),
            [("new".to_string(), rows[1])]
        );
        // The answer is read back from its row, byte for byte, until it expires.
        let replayed = db.load_answer(rows[1]).unwrap().expect("kept");
        assert_eq!((replayed.status, &replayed.body[..]), (409, &b"{}"[..]));
        assert!(db.load_answer(rows[0]).unwrap().is_none(), "forgotten");

        // Over the cap on keys: the rows before the first one kept go, oldest
        // first, `limit` at a time, whatever their age.
        let more = db
            .commit([], ["a", "b", "c", "d"].map(|key| answer(key, 300)).iter())
            .unwrap();
        assert_eq!(db.forget_answers(150, more[2], 2).unwrap(), 2);
        assert_eq!(db.forget_answers(150, more[2], 2).unwrap(), 1);
        assert_eq!(db.forget_answers(150, more[2], 2).unwrap(), 0);
        assert_eq!(
            keys(db.load_answers(0).unwrap()),
            [("c".to_string(), more[2]), ("d".to_string(), more[3])]
        );
    }

    #[test]
    fn a_version_1_database_is_upgraded() {
        upgrade_version_1(SCHEMA);
    }

    #[test]
    fn a_version_1_database_of_the_first_releases_is_upgraded() {
        // Before 2d1f0eb, version 1 wrote its CHECK with `IN`.
        let first = SCHEMA.replace(
            "CHECK (status = 'booked' OR status = 'waiting' OR status = 'cancelled')",
            "CHECK (status IN ('booked', 'waiting', 'cancelled'))",
        );
        assert_ne!(first, SCHEMA);
        upgrade_version_1(&first);
    }

    /// A database of schema version 1 created by `schema`, with a few
    /// orders, opened: upgraded, its orders read as they were, and every
    /// later version's rows stored.
    fn upgrade_version_1(schema: &str) {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(&dir);
        let old = Connection::open(&settings.database).unwrap();
        old.execute_batch(schema).unwrap();
        old.execute_batch(
            "INSERT INTO events VALUES ('quiet', 5), ('gig', 1), ('empty', 3);
             INSERT INTO order_log (event_id, user_id, status) VALUES
                 ('gig', 'a', 'booked'), ('gig', 'b', 'waiting'), ('gig', 'c', 'waiting'),
                 ('quiet', 'q', 'booked'), ('gig', 'b', 'cancelled');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(old);
        let db = Database::open(&settings).unwrap();
        assert!(db.load_answers(0).unwrap().is_empty());
        // Version 5: counts from each user's last row, and creation in the
        // order of each event's first row (events without one last).
        let listed: Vec<_> = db
            .list_events(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.id.as_str().to_string(),
                    e.created,
                    e.booked_tickets,
                    e.waiting,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("gig".to_string(), 1, 1, 1),
                ("quiet".to_string(), 2, 1, 0),
                ("empty".to_string(), 3, 0, 0)
            ]
        );
        // Version 6: the log's rows are in the index by event already.
        assert_eq!(db.catch_up().unwrap(), 0);
        let (gig, _) = db
            .load_event(&EventId::parse("gig").unwrap())
            .unwrap()
            .expect("stored");
        assert_eq!(gig.standing("b"), Some(Standing::Cancelled));
        assert_eq!(gig.standing("c"), Some(Standing::Waiting { position: 1 }));
        let gig = EventId::parse("new").unwrap();
        let create = Change::CreateEvent {
            event: gig,
            settings: EventSettings::new(1),
        };
        db.commit([&create], []).unwrap();
        assert_eq!(db.list_events(3, 10).unwrap()[0].created, 4);
        // Version 7: the log takes holds, which the old CHECK refused.
        let held = OrderUpdate::Held {
            user: UserKey::from("h"),
            expires_at: UtcMillis(5),
        };
        let quiet = EventId::parse("quiet").unwrap();
        db.commit([&order(&quiet, held)], [])
            .expect("a held row is stored");
        // Version 8: the events' settings, and offers.
        let settings = EventSettings {
            sales_open: false,
            waiting_list: WaitingListMode::Offer { offer_secs: 60 },
            hold_secs: Some(30),
            ..EventSettings::new(6)
        };
        let configure = Change::Configure {
            event: quiet.clone(),
            settings,
            promoted: vec![Promotion::Offered {
                user: UserKey::from("o"),
                expires_at: UtcMillis(9),
            }],
        };
        let joins = order(&quiet, OrderUpdate::Waiting(UserKey::from("o")));
        db.commit([&joins, &configure], [])
            .expect("new settings and an offered row are stored");
        let listed = db.list_events(0, 10).unwrap();
        let quiet = listed.iter().find(|e| e.id == quiet).expect("listed");
        assert_eq!(
            (quiet.settings, quiet.held_tickets, quiet.waiting),
            (settings, 2, 0)
        );
    }

    #[test]
    fn holds_are_stored_with_their_expiries_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&settings(&dir)).unwrap();
        let event = EventId::parse("e").unwrap();
        let user = |name: &str| UserKey::from(name);
        let changes = [
            Change::CreateEvent {
                event: event.clone(),
                settings: EventSettings::new(2),
            },
            order(
                &event,
                OrderUpdate::Held {
                    user: user("early"),
                    expires_at: UtcMillis(1_000),
                },
            ),
            order(
                &event,
                OrderUpdate::Held {
                    user: user("late"),
                    expires_at: UtcMillis(9_000),
                },
            ),
            order(&event, OrderUpdate::Waiting(user("w"))),
            order(
                &event,
                OrderUpdate::HoldEnded {
                    user: user("early"),
                    lapsed: Some(UtcMillis(1_000)),
                    promoted: Some(Promotion::Booked(user("w"))),
                },
            ),
        ];
        db.commit(&changes, []).unwrap();
        assert_eq!(
            db.events_with_holds().unwrap(),
            std::slice::from_ref(&event)
        );
        let (state, _) = db.load_event(&event).unwrap().expect("stored");
        assert_eq!(
            state.standing("early"),
            Some(Standing::Expired {
                expired_at: UtcMillis(1_000)
            })
        );
        assert_eq!(
            state.standing("late"),
            Some(Standing::Held {
                expires_at: UtcMillis(9_000),
                offered: false
            })
        );
        assert_eq!(state.standing("w"), Some(Standing::Booked));
        let listed = &db.list_events(0, 1).unwrap()[0];
        assert_eq!(
            (listed.booked_tickets, listed.held_tickets, listed.waiting),
            (1, 1, 0)
        );
        let release = OrderUpdate::HoldEnded {
            user: user("late"),
            lapsed: None,
            promoted: None,
        };
        db.commit([&order(&event, release)], []).unwrap();
        assert!(db.events_with_holds().unwrap().is_empty());
        assert_eq!(db.totals().unwrap().held, 0);
    }

    #[test]
    fn opening_a_current_database_writes_nothing() {
        // A disk with no room left: a start-up must still read what is stored.
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(&dir);
        drop(Database::open(&settings).unwrap());
        let mut conn = Connection::open(&settings.database).unwrap();
        conn.pragma_update(None, "query_only", true).unwrap();
        migrate(&mut conn).expect("a current schema is only read");
        // An older one needs the write, and says so.
        conn.pragma_update(None, "query_only", false).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.pragma_update(None, "query_only", true).unwrap();
        assert!(migrate(&mut conn).is_err());
    }

    #[test]
    fn a_database_of_another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(&dir);
        Connection::open(&settings.database)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Database::open(&settings),
            Err(StorageError::SchemaVersion { found: 99, .. })
        ));
    }
}
