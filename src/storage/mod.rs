//! Storage: where decided changes are committed and events are read from.
//! One interface ([`Storage`]) with two implementations: [`sqlite`], the
//! embedded default, and [`postgres`], for instances that share a database
//! (`storage.backend` in the settings). [`Database`] is the handle the rest
//! of the server holds; [`replay`] reads a log back into events.
//!
//! Both keep the same tables. Every change appends rows to `order_log`
//! (event, user, new status, and for a hold its expiry: see [`LogRow`]),
//! whose `seq` is the order of commits. A user's
//! status is the last row about it; the waiting list is the waiting users in
//! the order of the rows that put them there, so nothing is ever renumbered.
//! The only rows ever deleted are those that a later row of the same user
//! replaced (compaction). Each event's row keeps its counts, moved once per
//! transaction, and its place in creation order (`created`), so that events
//! are counted and listed without reading their orders. The answers of
//! idempotent requests are stored in `idempotency`, in the transaction of
//! their change. These functions block: the persistence actor and the
//! reader threads of activations (`actors::readers`) call them.

use std::ops::Deref;
use std::sync::Arc;

use crate::booking::{
    CountsMoved, EventSettings, EventState, OrderUpdate, Promotion, Summary, UtcMillis,
    WaitingListMode,
};
use crate::configuration::{Backend, Settings};
use crate::idempotency::{Answer, KeyId, StoredAnswer, StoredKey};
use crate::ids::EventId;

pub mod postgres;
mod replay;
pub mod sqlite;

/// Why the database could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("unreadable stored value: {0}")]
    Decode(#[from] rusqlite::types::FromSqlError),
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL cannot be reached: {0}")]
    Unavailable(String),
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("the database has schema version {found}; this server reads version {supported}")]
    SchemaVersion { found: i64, supported: i64 },
    #[error("stored orders contradict each other: {0}")]
    Inconsistent(String),
}

impl StorageError {
    /// Refuses a database whose schema version `found` is newer than the
    /// `supported` one: this server would misread it.
    pub(in crate::storage) fn refuse_newer_schema(found: i64, supported: i64) -> Result<(), Self> {
        if found > supported {
            return Err(StorageError::SchemaVersion { found, supported });
        }
        Ok(())
    }
}

/// One decided change, as the persistence actor hands it over.
#[derive(Debug, Clone)]
pub enum Change {
    CreateEvent {
        event: EventId,
        settings: EventSettings,
    },
    /// The event's settings changed, and the tickets that more capacity
    /// freed went to the head of its queue: one change, so one transaction.
    Configure {
        event: EventId,
        settings: EventSettings,
        promoted: Vec<Promotion>,
    },
    Order {
        event: EventId,
        update: OrderUpdate,
    },
}

impl Change {
    /// The event it changes.
    pub fn event(&self) -> &EventId {
        match self {
            Change::CreateEvent { event, .. }
            | Change::Configure { event, .. }
            | Change::Order { event, .. } => event,
        }
    }

    /// The rows it appends to the order log, in order.
    pub fn log_rows(&self) -> impl Iterator<Item = LogRow<'_>> {
        let (update, promoted): (Option<&OrderUpdate>, &[Promotion]) = match self {
            Change::CreateEvent { .. } => (None, &[]),
            Change::Configure { promoted, .. } => (None, promoted),
            Change::Order { update, .. } => (Some(update), &[]),
        };
        let order_rows = update.into_iter().flat_map(log_rows);
        order_rows.chain(promoted.iter().map(LogRow::promotion))
    }

    /// What it moves in its event's counts.
    pub fn counts(&self) -> CountsMoved {
        match self {
            Change::CreateEvent { .. } => CountsMoved::default(),
            Change::Configure { promoted, .. } => promoted
                .iter()
                .fold(CountsMoved::default(), |all, p| all.and(p.counts())),
            Change::Order { update, .. } => update.counts(),
        }
    }
}

/// An event's settings as the columns of `events` take them, in order:
/// `total_tickets`, `sales_open`, `waiting_list` (`assign`, `offer`),
/// `offer_secs` (`NULL` in `assign` mode) and `hold_secs` (`NULL`: the server's).
pub fn settings_columns(
    settings: &EventSettings,
) -> (i64, bool, &'static str, Option<i64>, Option<i64>) {
    let (mode, offer_secs) = match settings.waiting_list {
        WaitingListMode::Assign => ("assign", None),
        WaitingListMode::Offer { offer_secs } => ("offer", Some(offer_secs.into())),
    };
    (
        settings.total_tickets.into(),
        settings.sales_open,
        mode,
        offer_secs,
        settings.hold_secs.map(i64::from),
    )
}

/// The waiting-list mode the columns of `events` spell.
pub fn waiting_list_of(
    mode: &str,
    offer_secs: Option<i64>,
) -> Result<WaitingListMode, StorageError> {
    match (mode, offer_secs) {
        ("assign", _) => Ok(WaitingListMode::Assign),
        ("offer", Some(secs)) => Ok(WaitingListMode::Offer {
            offer_secs: u32::try_from(secs)
                .map_err(|_| StorageError::Inconsistent(format!("offer_secs {secs}")))?,
        }),
        (mode, secs) => Err(StorageError::Inconsistent(format!(
            "waiting list {mode:?} with offer_secs {secs:?}"
        ))),
    }
}

/// One row of the order log: `user`'s new status at the event. A `held`
/// or `offered` row carries the hold's expiry, an `expired` one the instant
/// its hold lapsed (`expires_at`, milliseconds since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRow<'a> {
    pub user: &'a str,
    pub status: &'static str,
    pub expires_at: Option<i64>,
}

impl<'a> LogRow<'a> {
    fn new(user: &'a str, status: &'static str) -> Self {
        LogRow {
            user,
            status,
            expires_at: None,
        }
    }

    fn at(user: &'a str, status: &'static str, at: UtcMillis) -> Self {
        LogRow {
            user,
            status,
            expires_at: Some(at.0),
        }
    }

    /// The row of the head of the queue that got a freed ticket.
    fn promotion(promoted: &'a Promotion) -> Self {
        match promoted {
            Promotion::Booked(user) => LogRow::new(user, "booked"),
            Promotion::Offered { user, expires_at } => LogRow::at(user, "offered", *expires_at),
        }
    }
}

/// The rows of the log an order's change appends, in order (one or two).
fn log_rows(update: &OrderUpdate) -> impl Iterator<Item = LogRow<'_>> {
    let (first, promoted) = match update {
        OrderUpdate::Booked(user) | OrderUpdate::Confirmed(user) => {
            (LogRow::new(user, "booked"), None)
        }
        OrderUpdate::Waiting(user) => (LogRow::new(user, "waiting"), None),
        OrderUpdate::Held { user, expires_at } => (LogRow::at(user, "held", *expires_at), None),
        OrderUpdate::LeftWaitingList(user) => (LogRow::new(user, "cancelled"), None),
        OrderUpdate::Cancelled { user, promoted } => {
            (LogRow::new(user, "cancelled"), promoted.as_ref())
        }
        OrderUpdate::HoldEnded {
            user,
            lapsed,
            promoted,
        } => (
            match lapsed {
                Some(at) => LogRow::at(user, "expired", *at),
                None => LogRow::new(user, "cancelled"),
            },
            promoted.as_ref(),
        ),
    };
    std::iter::once(first).chain(promoted.map(LogRow::promotion))
}

/// Every stored event, and their counts as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub events: u64,
    pub booked: u64,
    pub held: u64,
    pub waiting: u64,
}

/// One stored event as listed: its counts as committed, without its orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    /// Its place in creation order (1, 2, ...): the cursor of a listing.
    pub created: i64,
    /// Its changes committed so far (see `Summary::version`).
    pub version: u64,
    pub settings: EventSettings,
    pub booked_tickets: u32,
    pub held_tickets: u32,
    pub waiting: u64,
}

impl StoredEvent {
    /// Its settings and counts as an event's status reports them.
    pub fn summary(&self) -> Summary {
        Summary {
            version: self.version,
            settings: self.settings,
            booked_tickets: self.booked_tickets,
            held_tickets: self.held_tickets,
            waiting: self.waiting as usize,
        }
    }
}

/// What [`Storage::session`] says while the writer has no session: nothing
/// is owned then.
pub const NO_SESSION: u64 = 0;

/// The writer's first session (with SQLite, its only one).
pub const FIRST_SESSION: u64 = 1;

/// What the persistence actor and the reads need of a database. Every
/// method blocks until the database answered.
pub trait Storage: Send + Sync {
    /// Writes `changes` and the `answers` of idempotent requests in one
    /// transaction: all of them are stored, or none. Returns the answers'
    /// rows (`seq`), in the order given. Acknowledged means committed: it
    /// returns only once the transaction is durable.
    fn commit_batch(
        &self,
        changes: &[&Change],
        answers: &[&StoredAnswer],
    ) -> Result<Vec<i64>, StorageError>;

    /// The readiness probe: commits a small transaction, or says why not.
    fn check_writable(&self) -> Result<(), StorageError>;

    /// The first row of `idempotency` whose fingerprint was taken over the
    /// canonical request; those before were taken over the body as sent.
    fn raw_fingerprints_before(&self) -> Result<i64, StorageError>;

    /// The keys of idempotent requests whose answers were stored at or after
    /// `cutoff` (unix seconds), oldest first; the answers stay on disk.
    fn load_answers(&self, cutoff: i64) -> Result<Vec<StoredKey>, StorageError>;

    /// The answer stored in row `seq`, to replay it; `None` once it expired.
    fn load_answer(&self, seq: i64) -> Result<Option<Answer>, StorageError>;

    /// Deletes up to `limit` of the answers stored before `cutoff` (unix
    /// seconds) or in a row before `first_kept`, among the oldest `limit`
    /// rows, and returns how many: a caller deletes a chunk at a time until
    /// one is not full. A database that instances share deletes only what
    /// expired: `first_kept` is one instance's cap on its memory.
    fn forget_answers(
        &self,
        cutoff: i64,
        first_kept: i64,
        limit: usize,
    ) -> Result<usize, StorageError>;

    /// The rows of the log that a later row of the same user replaced
    /// (ascending), from one pass over the whole log.
    fn superseded_rows(&self) -> Result<Vec<i64>, StorageError>;

    /// Deletes `rows` of the order log in one transaction; returns how many
    /// were there. Only for rows that [`superseded_rows`](Self::superseded_rows)
    /// or [`load_event`](Self::load_event) named.
    fn delete_superseded(&self, rows: &[i64]) -> Result<usize, StorageError>;

    /// Every stored event, its booked and held tickets and its waiting
    /// users, as committed, without reading any order.
    fn totals(&self) -> Result<Totals, StorageError>;

    /// Up to `limit` events created after the one in place `after` of the
    /// creation order (0: from the first), in that order, with their counts
    /// as committed. Events created meanwhile come after every one listed.
    fn list_events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StorageError>;

    /// One stored event as [`list_events`](Self::list_events) lists it; `None`
    /// if it was never committed.
    fn stored_event(&self, event: &EventId) -> Result<Option<StoredEvent>, StorageError>;

    /// The events that had live holds at their last commit and that no
    /// instance owns now (every one of them, where there is one instance),
    /// in creation order: they must be activated to lapse their holds in
    /// time (see `EventRegistry::watch_holds`).
    fn events_with_holds(&self) -> Result<Vec<EventId>, StorageError>;

    /// At least as many rows as the order log holds.
    fn log_rows_at_most(&self) -> Result<u64, StorageError>;

    /// Reads one event as it is stored, and the rows of its log that later
    /// ones replaced (to be deleted); `None` if it was never committed. Reads
    /// only that event's rows: the time it takes follows the event's orders.
    fn load_event(&self, event: &EventId) -> Result<Option<(EventState, Vec<i64>)>, StorageError>;

    /// Whether several instances may share this database, so that each
    /// event's changes must be committed by its owner alone (see
    /// [`claim`](Self::claim)).
    fn fences(&self) -> bool {
        false
    }

    /// Takes the ownership of `event` for this instance: only its owner
    /// commits its changes. `Some(session)`: owned, for as long as the
    /// writer's session `session` lasts (see [`session`](Self::session));
    /// `None`: another instance owns it. Taken once per session, given up
    /// once ([`release`](Self::release)). Always owned where there is only
    /// one instance (SQLite).
    fn claim(&self, _event: &EventId) -> Result<Option<u64>, StorageError> {
        Ok(Some(FIRST_SESSION))
    }

    /// Gives up the ownership that [`claim`](Self::claim) took in the
    /// current session; once the writer's session ended, it is gone already.
    fn release(&self, _event: &EventId) -> Result<(), StorageError> {
        Ok(())
    }

    /// The writer's current session: a number that changes whenever the
    /// connection that commits ends ([`NO_SESSION`]) or is opened again,
    /// and with it every ownership is lost. Cheap: read at every request.
    fn session(&self) -> u64 {
        FIRST_SESSION
    }

    /// The first answer stored under `id` at or after `since` (unix
    /// seconds), by any instance; `None` where this instance's memory knows
    /// every key already (one instance: SQLite).
    fn find_answer(&self, _id: &KeyId, _since: i64) -> Result<Option<StoredKey>, StorageError> {
        Ok(None)
    }

    /// Asks the instance that owns `event`, whichever it is, to hand it
    /// over (see [`listen_for_handoffs`](Self::listen_for_handoffs)).
    fn request_handoff(&self, _event: &EventId) -> Result<(), StorageError> {
        Ok(())
    }

    /// Calls `deliver` with the id of every event another instance asks this
    /// one to hand over, for as long as the process runs (reconnecting as
    /// needed). Nothing to hear where there is only one instance.
    fn listen_for_handoffs(&self, _deliver: Box<dyn Fn(EventId) + Send + Sync>) {}

    /// Brings up to date what is derived from the log in batches rather
    /// than at each commit: SQLite's index of the log by event, PostgreSQL's
    /// events' counts. Returns the rows (SQLite) or events (PostgreSQL)
    /// taken in. Reads are right whenever it runs; it keeps them short.
    fn catch_up(&self) -> Result<u64, StorageError> {
        Ok(0)
    }

    /// Hands back memory that caches hold, once what they cache left memory.
    fn release_memory(&self) {}
}

/// The storage the settings chose, shared by the store, the activations and
/// the routes that read.
#[derive(Clone)]
pub struct Database(Arc<dyn Storage>);

impl Database {
    /// Opens the backend of `settings.storage`: SQLite's file (created if
    /// needed) or a connection to PostgreSQL; creates or migrates its schema.
    pub fn open(settings: &Settings) -> Result<Self, StorageError> {
        Ok(Database(match settings.storage.backend {
            Backend::Sqlite => Arc::new(sqlite::SqliteStorage::open(settings)?),
            Backend::Postgres => Arc::new(postgres::PostgresStorage::open(
                &settings.storage.postgres_url,
            )?),
        }))
    }

    /// What the logs call the database: SQLite's file by its full path where
    /// it has one; PostgreSQL's server and database, without user or password.
    pub fn describe(settings: &Settings) -> String {
        match settings.storage.backend {
            Backend::Sqlite => std::fs::canonicalize(&settings.database)
                .map_or_else(|_| settings.database.clone(), |p| p.display().to_string()),
            Backend::Postgres => postgres::describe(&settings.storage.postgres_url),
        }
    }

    /// [`Storage::commit_batch`] of any collections of changes and answers.
    pub fn commit<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Change>,
        answers: impl IntoIterator<Item = &'a StoredAnswer>,
    ) -> Result<Vec<i64>, StorageError> {
        let changes: Vec<&Change> = changes.into_iter().collect();
        let answers: Vec<&StoredAnswer> = answers.into_iter().collect();
        self.0.commit_batch(&changes, &answers)
    }
}

impl Deref for Database {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
