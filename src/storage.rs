//! SQLite: the schema, one transaction per batch of changes, and recovery.
//!
//! `orders` holds one row per (event, user) with the user's current status,
//! updated in place, so the table grows with users, not with history. Waiting
//! rows keep the sequence number they joined with; the queue is their order by
//! it, so nothing is ever renumbered. These functions block: the persistence
//! actor calls them on a blocking thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::booking::{EventState, OrderUpdate};
use crate::configuration::{Settings, Synchronous};
use crate::ids::EventId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id            TEXT PRIMARY KEY,
    total_tickets INTEGER NOT NULL CHECK (total_tickets > 0)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    event_id  TEXT NOT NULL REFERENCES events (id),
    user_id   TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('booked', 'waiting', 'cancelled')),
    -- Join order on the waiting list; kept after promotion or cancellation.
    queue_seq INTEGER,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("unreadable stored value: {0}")]
    Decode(#[from] rusqlite::types::FromSqlError),
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("stored orders contradict the change: {0}")]
    Inconsistent(String),
}

/// One decided change, as the persistence actor hands it over.
#[derive(Debug, Clone)]
pub enum Change {
    CreateEvent { event: EventId, total_tickets: u32 },
    Order { event: EventId, update: OrderUpdate },
}

/// Everything needed to resume: every event and the next free queue sequence number.
pub struct Recovered {
    pub events: Vec<(EventId, EventState)>,
    pub next_queue_seq: i64,
}

/// A pool of SQLite connections, each with the configured pragmas.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<SqliteConnectionManager>,
}

impl Database {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(settings: &Settings) -> Result<Self, StorageError> {
        let path = Path::new(&settings.database);
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
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
        // A plain first connection reports a bad path at once; the pool would retry for its timeout.
        let mut first = Connection::open(path)?;
        pragmas.apply(&mut first)?;
        first.execute_batch(SCHEMA)?;
        drop(first);

        let manager =
            SqliteConnectionManager::file(path).with_init(move |conn| pragmas.apply(conn));
        let pool = r2d2::Pool::builder()
            .max_size(4)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        Ok(Database { pool })
    }

    /// Writes `changes` in one transaction: all of them are stored, or none.
    /// Waiting users take their queue numbers from `next_queue_seq`.
    pub fn commit<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Change>,
        next_queue_seq: &mut i64,
    ) -> Result<(), StorageError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut create =
                tx.prepare_cached("INSERT INTO events (id, total_tickets) VALUES (?1, ?2)")?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO orders (event_id, user_id, status, queue_seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_id, user_id) DO UPDATE SET status = excluded.status, queue_seq = excluded.queue_seq",
            )?;
            let mut set_status = tx.prepare_cached(
                "UPDATE orders SET status = ?3 WHERE event_id = ?1 AND user_id = ?2",
            )?;
            let mut update_status =
                |event: &EventId, user: &str, status: &str| -> Result<(), StorageError> {
                    match set_status.execute(params![event.as_str(), user, status])? {
                        1 => Ok(()),
                        _ => Err(StorageError::Inconsistent(format!(
                            "no order of {user:?} at event {event}"
                        ))),
                    }
                };
            for change in changes {
                match change {
                    Change::CreateEvent {
                        event,
                        total_tickets,
                    } => {
                        create.execute(params![event.as_str(), total_tickets])?;
                    }
                    Change::Order { event, update } => match update {
                        OrderUpdate::Booked(user) => {
                            upsert.execute(params![
                                event.as_str(),
                                user.as_ref(),
                                "booked",
                                None::<i64>
                            ])?;
                        }
                        OrderUpdate::Waiting(user) => {
                            upsert.execute(params![
                                event.as_str(),
                                user.as_ref(),
                                "waiting",
                                *next_queue_seq
                            ])?;
                            *next_queue_seq += 1;
                        }
                        OrderUpdate::Cancelled(user) => update_status(event, user, "cancelled")?,
                        OrderUpdate::Reassigned {
                            cancelled,
                            promoted,
                        } => {
                            update_status(event, cancelled, "cancelled")?;
                            update_status(event, promoted, "booked")?;
                        }
                    },
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads every event with its holders and its queue in order.
    pub fn load_all(&self) -> Result<Recovered, StorageError> {
        let conn = self.pool.get()?;
        let mut loader = Loader::default();
        let mut events = conn.prepare("SELECT id, total_tickets FROM events")?;
        let mut rows = events.query([])?;
        while let Some(row) = rows.next()? {
            loader.event(row.get_ref(0)?.as_str()?, row.get(1)?);
        }
        let mut orders = conn
            .prepare("SELECT event_id, user_id, status, queue_seq FROM orders ORDER BY event_id")?;
        let mut rows = orders.query([])?;
        while let Some(row) = rows.next()? {
            loader.order(
                row.get_ref(0)?.as_str()?,
                row.get_ref(1)?.as_str()?,
                row.get_ref(2)?.as_str()?,
                row.get(3)?,
            )?;
        }
        Ok(loader.finish())
    }

    /// Reads one event as it is stored; `None` if it was never committed.
    pub fn load_event(&self, event: &EventId) -> Result<Option<EventState>, StorageError> {
        let conn = self.pool.get()?;
        let total: Option<u32> = conn
            .query_row(
                "SELECT total_tickets FROM events WHERE id = ?1",
                [event.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        let Some(total) = total else { return Ok(None) };
        let mut loader = Loader::default();
        loader.event(event.as_str(), total);
        let mut orders =
            conn.prepare("SELECT user_id, status, queue_seq FROM orders WHERE event_id = ?1")?;
        let mut rows = orders.query([event.as_str()])?;
        while let Some(row) = rows.next()? {
            loader.order(
                event.as_str(),
                row.get_ref(0)?.as_str()?,
                row.get_ref(1)?.as_str()?,
                row.get(2)?,
            )?;
        }
        Ok(loader.finish().events.pop().map(|(_, state)| state))
    }
}

/// Collects rows, one pass, then builds each event's state with its queue sorted.
#[derive(Default)]
struct Loader {
    events: HashMap<EventId, StoredEvent>,
    max_queue_seq: i64,
}

struct StoredEvent {
    total_tickets: u32,
    booked: Vec<Arc<str>>,
    waiting: Vec<(i64, Arc<str>)>,
    cancelled: Vec<Arc<str>>,
}

impl Loader {
    fn event(&mut self, id: &str, total_tickets: u32) {
        let stored = StoredEvent {
            total_tickets,
            booked: Vec::new(),
            waiting: Vec::new(),
            cancelled: Vec::new(),
        };
        self.events.insert(EventId::stored(id), stored);
    }

    fn order(
        &mut self,
        event: &str,
        user: &str,
        status: &str,
        queue_seq: Option<i64>,
    ) -> Result<(), StorageError> {
        let stored = self.events.get_mut(event).ok_or_else(|| {
            StorageError::Inconsistent(format!("order of {user:?} at unknown event {event}"))
        })?;
        let user = Arc::from(user);
        self.max_queue_seq = self.max_queue_seq.max(queue_seq.unwrap_or(0));
        match (status, queue_seq) {
            ("booked", _) => stored.booked.push(user),
            ("waiting", Some(seq)) => stored.waiting.push((seq, user)),
            ("cancelled", _) => stored.cancelled.push(user),
            _ => {
                return Err(StorageError::Inconsistent(format!(
                    "order of {user:?} has status {status:?}"
                )))
            }
        }
        Ok(())
    }

    fn finish(self) -> Recovered {
        let events = self
            .events
            .into_iter()
            .map(|(id, mut stored)| {
                stored.waiting.sort_unstable_by_key(|(seq, _)| *seq);
                let waiting = stored.waiting.into_iter().map(|(_, user)| user);
                (
                    id,
                    EventState::restore(
                        stored.total_tickets,
                        stored.booked,
                        waiting,
                        stored.cancelled,
                    ),
                )
            })
            .collect();
        Recovered {
            events,
            next_queue_seq: self.max_queue_seq + 1,
        }
    }
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
    use super::*;
    use crate::booking::UserStatus;

    fn open(dir: &tempfile::TempDir) -> Database {
        let settings = Settings {
            database: dir.path().join("t.db").display().to_string(),
            ..Settings::default()
        };
        Database::open(&settings).unwrap()
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
        let db = open(&dir);
        let gig = EventId::parse("gig").unwrap();
        let user = |name: &str| Arc::<str>::from(name);
        let mut seq = 1;
        let changes = [
            Change::CreateEvent {
                event: gig.clone(),
                total_tickets: 1,
            },
            order(&gig, OrderUpdate::Booked(user("a"))),
            order(&gig, OrderUpdate::Waiting(user("z"))),
            order(&gig, OrderUpdate::Waiting(user("b"))),
            order(&gig, OrderUpdate::Waiting(user("m"))),
            order(
                &gig,
                OrderUpdate::Reassigned {
                    cancelled: user("a"),
                    promoted: user("z"),
                },
            ),
            order(&gig, OrderUpdate::Cancelled(user("b"))),
        ];
        db.commit(&changes, &mut seq).unwrap();
        let recovered = db.load_all().unwrap();
        assert_eq!(recovered.next_queue_seq, 4);
        let (id, state) = &recovered.events[0];
        assert_eq!(id, &gig);
        assert_eq!(state.user_status("z"), Some(UserStatus::Booked));
        assert_eq!(state.user_status("a"), Some(UserStatus::Cancelled));
        assert_eq!(state.user_status("b"), Some(UserStatus::Cancelled));
        assert_eq!(
            state.user_status("m"),
            Some(UserStatus::Waiting { position: 1 })
        );
        assert_eq!(
            db.load_event(&gig).unwrap().unwrap().summary(),
            state.summary()
        );
    }

    #[test]
    fn a_failing_change_rolls_back_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let gig = EventId::parse("gig").unwrap();
        let changes = [
            Change::CreateEvent {
                event: gig.clone(),
                total_tickets: 1,
            },
            order(&gig, OrderUpdate::Cancelled(Arc::from("never-booked"))),
        ];
        assert!(matches!(
            db.commit(&changes, &mut 1),
            Err(StorageError::Inconsistent(_))
        ));
        assert!(db.load_all().unwrap().events.is_empty());
    }
}
