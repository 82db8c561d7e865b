//! PostgreSQL (`storage.backend = "postgres"`): the same storage as
//! SQLite's, for instances that share one database.
//!
//! The driver is `tokio-postgres`, whose connections need a tokio runtime for
//! their I/O: they run on a small runtime of their own ([`IoThread`]), and the
//! storage's blocking functions wait for their queries with
//! `futures::executor::block_on`, from the store's thread, a reader thread
//! of activations or a blocking thread, as they call SQLite. (The `postgres` crate's blocking client
//! would refuse to run on the store's thread: actix runs a tokio runtime there.)
//!
//! Four connections: the writer, one session through which every commit
//! goes (the store's thread is its only user); the reader, shared by every
//! other read (tokio-postgres pipelines concurrent queries on one
//! connection), and the folder, which folds the log's counts into the
//! events' rows ([`FOLD_COUNTS`]) without holding up commits or reads, each
//! opened again on its next use after it broke (PostgreSQL restarted, or
//! the session was terminated); and the listener of hand-off requests
//! (`LISTEN`), opened again a second after it broke.
//!
//! One writer per event across instances: an instance owns an event while
//! table `owners` names its writer's session for the event and that
//! session lives. Each writer's session takes a number of its own (its
//! *owner key*, from sequence `writers`) and holds, for as long as it lives,
//! a session-level advisory lock on it ([`owner_lock!`],
//! <https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS>).
//! A claim ([`CLAIM`]) writes its key into the event's row, unless the row
//! names another key whose lock some session holds; a release deletes the
//! row. The lock is held by the very session that commits the owner's
//! changes, so no commit of an owner can land after another took its
//! event: as a session ends, PostgreSQL rolls back its open transaction
//! before it releases its locks (`ShutdownPostgres` in its
//! `src/backend/utils/init/postinit.c`). One lock per session rather than
//! one per event: PostgreSQL walks every lock a session holds at each of
//! its commits (docs/performance.md).
//! For the same reason a commit never opens the writer's session again: only
//! a claim, or the readiness probe, does, and that starts a new session
//! number ([`Storage::session`], this process's count of its writer's
//! sessions, not the owner key), under which no event is owned until
//! claimed again.
//!
//! A session's end is seen at once by every actor: the writer's connection
//! task sets the live session number ([`Storage::session`]) to none as it
//! ends, and an actor whose session ended answers nothing more.
//!
//! A transaction is acknowledged once `COMMIT` returned, with
//! `synchronous_commit` on in the writer's session: the commit record is
//! flushed to PostgreSQL's WAL by then
//! (<https://www.postgresql.org/docs/current/wal-async-commit.html>).

mod schema;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{pin_mut, StreamExt, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, IsolationLevel, NoTls, Statement};

use super::replay::Loader;
use super::{
    settings_columns, waiting_list_of, Change, Storage, StorageError, StoredEvent, Totals,
    NO_SESSION,
};
use crate::booking::{CountsMoved, EventSettings, EventState};
use crate::idempotency::{Answer, KeyId, StoredAnswer, StoredKey};
use crate::ids::EventId;

/// The advisory lock key that puts the creations of events of all instances
/// in one order (the bytes of "evbook-c"): each takes the next `created`.
const CREATION_LOCK: i64 = 0x6576_626f_6f6b_2d63;

/// TCP keepalives and the user timeout on every connection, on both ends
/// (the server's through its session settings): a peer that vanished
/// without closing the connection (its machine, its network) is noticed
/// after about 5 + 3 × 2 = 11 s of silence, or 10 s of data not
/// acknowledged, instead of the kernel's default of over two hours. Here a
/// commit waiting on a vanished PostgreSQL then fails, and is answered 503;
/// there PostgreSQL ends the session of a vanished instance, and with it
/// the lock by which it owned its events.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection attempt waits for the server: a start, a claim or
/// a read after the connection broke fails after this rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a statement may wait for a lock (another instance's creation
/// lock, held by a stuck instance), and run, and a session may sit idle in
/// a transaction: the store's one thread must never wait for ever. Set on
/// every session (`lock_timeout`, `statement_timeout`,
/// `idle_in_transaction_session_timeout`); a time-out fails the commit (503).
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime on which the connections' I/O runs: one thread, started once
/// per storage and kept for the life of the process.
struct IoThread {
    handle: tokio::runtime::Handle,
}

impl IoThread {
    fn start() -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| StorageError::Unavailable(format!("no runtime: {error}")))?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("postgres-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|error| StorageError::Unavailable(format!("no I/O thread: {error}")))?;
        Ok(IoThread { handle })
    }
}

/// The writer's session, and its statements of a batch and of a claim,
/// prepared once per session.
struct Writer {
    client: Client,
    /// The owner key that names this session in `owners` (from sequence
    /// `writers`), the key of its owner lock ([`LOCK_OWNER`]).
    key: i32,
    /// [`CLAIM`].
    claim: Statement,
    /// [`COMMIT_BATCH`].
    commit: Statement,
    /// [`INSERT_ORDERS`], for a batch with nothing else to write.
    orders: Statement,
}

/// A batch's rows of the log, in the order given, each with what it moves
/// in its event's counts (schema version 7): `$1` to `$8` of
/// [`COMMIT_BATCH`]. Alone, it is the statement of a batch that moves
/// nothing in the events' rows and stores no answers (bookings and
/// cancellations without an `Idempotency-Key`, most of them): the whole
/// statement's other parts, even with nothing to do, open `events` and
/// `idempotency` and their indexes at every commit, a good part of a small
/// commit's CPU (measured in `docs/performance.md`).
macro_rules! insert_orders {
    () => {
        "INSERT INTO order_log (event_id, user_id, status, expires_at, claim,
        moved_booked, moved_waiting, moved_version)
    SELECT e, u, s, x, w, b, q, v FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
        $5::int8[], $6::int2[], $7::int2[], $8::int2[])
        WITH ORDINALITY AS o (e, u, s, x, w, b, q, v, n) ORDER BY n"
    };
}
const INSERT_ORDERS: &str = insert_orders!();

/// A batch's changes and answers in one statement (data-modifying `WITH`
/// queries, <https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING>):
/// the log's rows ([`INSERT_ORDERS`]); the counts moved in the events' rows
/// themselves, once per event, only for held tickets and settings' changes;
/// the answers' rows, whose `seq`s it returns. Alone, it is its own
/// transaction: one round trip per commit.
const COMMIT_BATCH: &str = concat!(
    "
WITH orders AS (
    ",
    insert_orders!(),
    "
), counts AS (
    UPDATE events SET booked = booked + d.b, held = held + d.h, waiting = waiting + d.w,
        version = version + d.v
    FROM unnest($9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[]) AS d (id, b, h, w, v)
    WHERE events.id = d.id
), answers AS (
    INSERT INTO idempotency (scope, key, fingerprint, status, body, stored_at)
    SELECT s, k, f, c, b, t FROM unnest($14::text[], $15::text[], $16::bytea[],
        $17::int4[], $18::bytea[], $19::int8[])
        WITH ORDINALITY AS a (s, k, f, c, b, t, n) ORDER BY n
    RETURNING seq
)
SELECT seq FROM answers"
);

/// The class of the advisory lock that each writer's session holds on its
/// own number for as long as it lives, `(class, number)` in the form of two
/// `integer`s (the bytes of "evbo"); `pg_locks` shows it with the class in
/// `classid`, the number in `objid` and `objsubid` 2
/// (<https://www.postgresql.org/docs/current/view-pg-locks.html>). Not the
/// session's process id: a process id is used again once its process
/// ended, and the row of an event whose owner died would then name a live
/// session that never claimed it.
macro_rules! owner_lock {
    () => {
        "1702257263"
    };
}

/// Takes the writer's session's number, the next of sequence `writers`,
/// and its lock ([`owner_lock!`]) as it opens: false if some session holds
/// it already (the sequence went round).
const LOCK_OWNER: &str = concat!(
    "SELECT k, pg_try_advisory_lock(",
    owner_lock!(),
    ", k) FROM (SELECT nextval('writers')::integer AS k) AS n"
);

/// Whether the session that the row of `owners` aliased `o` names lives:
/// some session holds the lock on its key ([`owner_lock!`]).
macro_rules! owner_lives {
    () => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.classid = ",
            owner_lock!(),
            " AND l.objid = o.owner::oid
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        )
    };
}

/// Takes event `$1` for the writer's session (its number in `$2`), unless a
/// live session other than this one owns it, and returns the claim's number (sequence
/// `ownerships`, taken only by a claim that succeeds); no row: owned
/// elsewhere. Two claims of one event take turns on its row: `ON CONFLICT`
/// locks the row and evaluates its condition on the row's latest version,
/// so the second finds the first's session, alive; where there was no row,
/// the second insert waits for the first and then finds its row
/// (<https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED>).
const CLAIM: &str = concat!(
    "INSERT INTO owners AS o (event_id, owner) VALUES ($1, $2)
ON CONFLICT (event_id) DO UPDATE SET owner = excluded.owner
    WHERE o.owner = excluded.owner OR NOT ",
    owner_lives!(),
    "
RETURNING nextval('ownerships')"
);

/// Folds what the log's rows after `counted_through` move into their
/// events' rows, for the events named in `$1` (schema version 7). It runs
/// beside the writer's commits, in a session of its own: it takes the
/// events' rows first, skipping those a commit holds
/// (<https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE>),
/// so that it never waits for a commit and the two never deadlock; a
/// skipped event is folded after its next commit, and read right
/// meanwhile. Each event's sums and last row are read in the statement's
/// snapshot, after the rows taken: a row folded elsewhere since is never
/// counted twice, and one committed after the snapshot stays for the next
/// fold, as its `seq` is above every row of its event before it (one writer
/// per event).
const FOLD_COUNTS: &str = "
WITH taken AS (
    SELECT id, counted_through FROM events WHERE id = ANY($1) FOR UPDATE SKIP LOCKED
)
UPDATE events SET booked = booked + t.b, waiting = waiting + t.w, version = version + t.v,
    counted_through = t.last
FROM (
    SELECT f.id, f.counted_through AS through, sum(o.moved_booked) AS b,
        sum(o.moved_waiting) AS w, sum(o.moved_version) AS v, max(o.seq) AS last
    FROM taken f JOIN order_log o ON o.event_id = f.id AND o.seq > f.counted_through
    GROUP BY f.id, f.counted_through
) t
WHERE events.id = t.id AND events.counted_through = t.through";

/// A claim or a release commits without waiting for its flush to the WAL
/// (<https://www.postgresql.org/docs/current/wal-async-commit.html>): lost
/// in a crash of PostgreSQL, which ends every session and frees every
/// event, it is harmless; and the first commit of a change that follows it
/// in the session flushes the WAL past it.
const NOT_FLUSHED: &str = "SET LOCAL synchronous_commit = off";

/// The planner settings of the writer and of the folder. A batch's counts join the events it
/// moved (an `unnest` of a few dozen ids, which the planner guesses at a
/// hundred rows) with `events`; left to itself, the planner hashes the whole
/// of `events` for it (seen with `EXPLAIN ANALYZE` at 1,000 events), a scan
/// of every event ever created per commit. Without hash and merge joins it
/// looks each event up by its key. And the batch's statement, whose
/// estimates do not depend on its arrays' contents, is planned once per
/// session rather than for each of its first executions. A fold joins the
/// events it names likewise. The two sessions run only the statements of
/// this file, none of which gains from what is off
/// (<https://www.postgresql.org/docs/current/runtime-config-query.html>).
const WRITING_SETTINGS: &str = "SET enable_hashjoin = off;
    SET enable_mergejoin = off;
    SET plan_cache_mode = force_generic_plan;";

/// See the module's comment.
pub struct PostgresStorage {
    config: Config,
    io: IoThread,
    /// The session of every commit; `None` until first used, or after it broke.
    writer: Mutex<Option<Writer>>,
    /// Sessions of the writer opened so far: the next one's number is one more.
    sessions: AtomicU64,
    /// The writer's live session, `NO_SESSION` from the moment its
    /// connection ended: read without a lock by every actor, at every request.
    current: Arc<AtomicU64>,
    /// Every other read's connection.
    reader: Mutex<Option<Arc<Client>>>,
    /// The number of each claim taken in the writer's live session, by
    /// event (schema version 2): every row of the log carries its event's.
    claims: Mutex<HashMap<String, i64>>,
    /// The folder's connection (see the module's comment).
    folder: Mutex<Option<Arc<Client>>>,
    /// Events with rows committed since the last fold of their counts
    /// ([`FOLD_COUNTS`]), which `catch_up` folds; shared with the fold in
    /// flight, which puts them back if it failed.
    unfolded: Arc<Mutex<HashSet<String>>>,
    /// A fold is in flight: the next waits for it to end.
    folding: Arc<AtomicBool>,
}

/// The server and database that `url` names, without user or password.
pub fn describe(url: &str) -> String {
    let Ok(config) = Config::from_str(url) else {
        return "PostgreSQL (an unreadable postgres_url)".into();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "PostgreSQL {}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Waits for `future` on the calling thread (see the module's comment).
fn wait<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

impl PostgresStorage {
    /// Connects to `url` (a libpq connection URI or key-value string,
    /// <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>)
    /// and creates or migrates the schema.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let mut config = Config::from_str(url)?;
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVES_IDLE)
            .keepalives_interval(KEEPALIVES_INTERVAL)
            .keepalives_retries(KEEPALIVES_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        // How `pg_stat_activity` names this instance's sessions: the URL's
        // `application_name` if it gives one (one per instance, say), else ours.
        if config.get_application_name().is_none() {
            config.application_name("event-booking");
        }
        let storage = PostgresStorage {
            config,
            io: IoThread::start()?,
            writer: Mutex::new(None),
            sessions: AtomicU64::new(0),
            current: Arc::new(AtomicU64::new(NO_SESSION)),
            reader: Mutex::new(None),
            claims: Mutex::default(),
            folder: Mutex::new(None),
            unfolded: Arc::default(),
            folding: Arc::default(),
        };
        // On a connection of its own: the writer's prepares its statement on the tables.
        let mut client = storage.connect(None)?;
        wait(schema::migrate(&mut client))?;
        drop(client);
        Ok(storage)
    }

    /// Opens a connection; its I/O runs on the I/O thread until it closes.
    /// `session`: the writer's session it is, which ends with it.
    fn connect(&self, session: Option<u64>) -> Result<Client, StorageError> {
        let (sent, received) = futures::channel::oneshot::channel();
        let config = self.config.clone();
        let current = self.current.clone();
        self.io.handle.spawn(async move {
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    let _ = sent.send(Ok(client));
                    if let Err(error) = connection.await {
                        log::warn!("PostgreSQL connection lost: {error}");
                    }
                    if let Some(ended) = session {
                        // At once, for every event: no actor answers as owner any more.
                        let _ = current.compare_exchange(
                            ended,
                            NO_SESSION,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                    }
                }
                Err(error) => {
                    let _ = sent.send(Err(error));
                }
            }
        });
        let client = wait(received)
            .map_err(|_| StorageError::Unavailable("the I/O thread stopped".into()))??;
        // Acknowledged means flushed to PostgreSQL's WAL, whatever the server's
        // default. And the server's side of the socket gets the keepalives
        // ours has (session settings, in seconds and milliseconds), so that
        // PostgreSQL ends the session, and frees its locks, of an instance
        // whose machine vanished (<https://www.postgresql.org/docs/current/runtime-config-connection.html>).
        wait(client.batch_execute(&format!(
            "SET synchronous_commit = on;
             SET tcp_keepalives_idle = {};
             SET tcp_keepalives_interval = {};
             SET tcp_keepalives_count = {KEEPALIVES_RETRIES};
             SET tcp_user_timeout = {};
             SET lock_timeout = {};
             SET statement_timeout = {};
             SET idle_in_transaction_session_timeout = {};",
            KEEPALIVES_IDLE.as_secs(),
            KEEPALIVES_INTERVAL.as_secs(),
            TCP_USER_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
        )))?;
        Ok(client)
    }

    /// The writer's session; opened again if it broke and `reopen` says so,
    /// else an error (see the module's comment).
    fn writer(&self, reopen: Reopen) -> Result<MutexGuard<'_, Option<Writer>>, StorageError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer
            .as_ref()
            .is_none_or(|writer| writer.client.is_closed())
        {
            *writer = None;
            if reopen == Reopen::No {
                return Err(StorageError::Unavailable(
                    "the session that commits ended; it is opened again by the next activation"
                        .into(),
                ));
            }
            self.current.store(NO_SESSION, Ordering::SeqCst);
            // They ended with the session before.
            self.claims().clear();
            let session = self.sessions.fetch_add(1, Ordering::SeqCst) + 1;
            let client = self.connect(Some(session))?;
            wait(client.batch_execute(WRITING_SETTINGS))?;
            let locked = wait(client.query_one(LOCK_OWNER, &[]))?;
            let key = locked.try_get(0)?;
            if !locked.try_get::<_, bool>(1)? {
                return Err(StorageError::Unavailable(format!(
                    "another session holds the owner lock {key} of the session that commits"
                )));
            }
            // Rows of a session that had this key before the sequence went
            // round: it ended (the lock was free), and they would otherwise
            // name this session as the owner of events it never claimed.
            wait(client.execute("DELETE FROM owners WHERE owner = $1", &[&key]))?;
            let claim = wait(client.prepare(CLAIM))?;
            let commit = wait(client.prepare(COMMIT_BATCH))?;
            let orders = wait(client.prepare(INSERT_ORDERS))?;
            let ended = client.is_closed();
            *writer = Some(Writer {
                client,
                key,
                claim,
                commit,
                orders,
            });
            self.current.store(session, Ordering::SeqCst);
            // Closed meanwhile: its task may have looked before the store above.
            if ended || writer.as_ref().is_some_and(|w| w.client.is_closed()) {
                self.current.store(NO_SESSION, Ordering::SeqCst);
            }
        }
        Ok(writer)
    }

    /// Runs `work` in a transaction of the writer's current session.
    fn write<T>(
        &self,
        reopen: Reopen,
        work: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut writer = self.writer(reopen)?;
        let client = &mut writer.as_mut().expect("connected").client;
        wait(async {
            let tx = client.transaction().await?;
            let done = work(&tx).await?;
            tx.commit().await?;
            Ok(done)
        })
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unfolded(&self) -> MutexGuard<'_, HashSet<String>> {
        self.unfolded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The readers' connection, opened again if it broke.
    fn reader(&self) -> Result<Arc<Client>, StorageError> {
        self.shared(&self.reader, "")
    }

    /// The folder's connection, opened again if it broke.
    fn folder(&self) -> Result<Arc<Client>, StorageError> {
        self.shared(&self.folder, WRITING_SETTINGS)
    }

    /// The connection in `slot`, opened again, with `settings`, if it broke.
    fn shared(
        &self,
        slot: &Mutex<Option<Arc<Client>>>,
        settings: &str,
    ) -> Result<Arc<Client>, StorageError> {
        let mut shared = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match shared.as_ref() {
            Some(client) if !client.is_closed() => Ok(client.clone()),
            _ => {
                let client = self.connect(None)?;
                wait(client.batch_execute(settings))?;
                let client = Arc::new(client);
                *shared = Some(client.clone());
                Ok(client)
            }
        }
    }
}

/// The channel of `LISTEN`/`NOTIFY` on which instances ask each other to
/// hand events over; the payload is the event's id
/// (<https://www.postgresql.org/docs/current/sql-notify.html>).
const HANDOFF_CHANNEL: &str = "booking_handoff";

/// How long the listener waits before it connects again after its
/// connection broke.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// A connection of its own that `LISTEN`s on [`HANDOFF_CHANNEL`] and calls
/// `deliver` with each valid event id heard, until the connection breaks.
async fn listen(
    config: &Config,
    deliver: &(dyn Fn(EventId) + Send + Sync),
) -> Result<(), StorageError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // Notifications arrive through the connection, not the client: it is
    // polled here, and what it yields forwarded.
    let (heard, mut hear) = futures::channel::mpsc::unbounded();
    let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        let _ = messages
            .map(Ok::<_, futures::channel::mpsc::SendError>)
            .forward(heard)
            .await;
    });
    client
        .batch_execute(&format!("LISTEN {HANDOFF_CHANNEL}"))
        .await?;
    while let Some(message) = hear.next().await {
        match message {
            Ok(AsyncMessage::Notification(note)) => {
                if let Ok(event) = EventId::parse(note.payload()) {
                    deliver(event);
                }
            }
            Ok(_) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Whether a use of the writer may open its session again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reopen {
    Yes,
    No,
}

/// Each event (`e`) with what its log's rows not folded yet move (`t`, see
/// [`FOLD_COUNTS`]): read in one snapshot, the two add up to the counts and
/// version of every change committed. The rows not folded are the last
/// second's, at the end of the log's index by event.
const EVENTS: &str = "events e CROSS JOIN LATERAL (
    SELECT coalesce(sum(o.moved_booked), 0) AS booked, coalesce(sum(o.moved_waiting), 0) AS waiting,
        coalesce(sum(o.moved_version), 0) AS version
    FROM order_log o WHERE o.event_id = e.id AND o.seq > e.counted_through) t";

/// An event's version and settings, from [`EVENTS`], in the order
/// [`settings_of`] reads them.
const SETTINGS: &str =
    "e.version + t.version, e.total_tickets, e.sales_open, e.waiting_list, e.offer_secs, e.hold_secs";

/// The version and settings in the columns [`SETTINGS`] of `row`, from
/// column `first` on.
fn settings_of(
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<(u64, EventSettings), StorageError> {
    let version: i64 = row.try_get(first)?;
    let total: i64 = row.try_get(first + 1)?;
    let hold_secs: Option<i64> = row.try_get(first + 5)?;
    let number = |value: i64| {
        u32::try_from(value).map_err(|_| StorageError::Inconsistent(format!("setting {value}")))
    };
    let settings = EventSettings {
        total_tickets: number(total)?,
        sales_open: row.try_get(first + 2)?,
        waiting_list: waiting_list_of(row.try_get(first + 3)?, row.try_get(first + 4)?)?,
        hold_secs: hold_secs.map(number).transpose()?,
    };
    Ok((version.max(0) as u64, settings))
}

/// An event as listed, from [`EVENTS`], in the order [`stored_event_of`] reads them.
const LISTED: &str = "e.id, e.created, e.booked + t.booked, e.held, e.waiting + t.waiting";

/// The event in the columns `LISTED`, then [`SETTINGS`], of `row`.
fn stored_event_of(row: &tokio_postgres::Row) -> Result<StoredEvent, StorageError> {
    let (version, settings) = settings_of(row, 5)?;
    Ok(StoredEvent {
        id: EventId::stored(row.try_get(0)?),
        created: row.try_get(1)?,
        version,
        booked_tickets: row.try_get::<_, i64>(2)?.max(0) as u32,
        held_tickets: row.try_get::<_, i64>(3)?.max(0) as u32,
        waiting: row.try_get::<_, i64>(4)?.max(0) as u64,
        settings,
    })
}

impl Storage for PostgresStorage {
    fn commit_batch(
        &self,
        changes: &[&Change],
        answers: &[&StoredAnswer],
    ) -> Result<Vec<i64>, StorageError> {
        let (mut created, mut configured) = (Vec::new(), Vec::new());
        let (mut events, mut users, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
        let (mut expiries, mut claimed) = (Vec::new(), Vec::new());
        let (mut moved_booked, mut moved_waiting) = (Vec::new(), Vec::new());
        let mut moved_version: Vec<i16> = Vec::new();
        let claims = self.claims();
        let mut unfolded = self.unfolded();
        // What moves in the events' rows themselves, once per event however
        // many of its changes the batch holds: held tickets, and all of a
        // settings' change (whose rows, if any, move nothing).
        let mut counts: Vec<(&str, CountsMoved, i64)> = Vec::new();
        for change in changes {
            let event = change.event().as_str();
            let moved = change.counts();
            // What moves in the event's row and its version there; what the
            // change's first row in the log carries, if anything.
            let (in_row, row_versions, in_log) = match change {
                Change::CreateEvent { settings, .. } => {
                    created.push((event, settings));
                    continue;
                }
                Change::Configure { settings, .. } => {
                    configured.push((event, settings));
                    (moved, 1, None)
                }
                Change::Order { .. } => {
                    let held = CountsMoved {
                        held: moved.held,
                        ..CountsMoved::default()
                    };
                    (held, 0, Some(moved))
                }
            };
            // Only changes of events owned in this session reach here (the store's `is_void`).
            let claim = claims.get(event).copied().ok_or_else(|| {
                StorageError::Inconsistent(format!("a change of {event}, not owned here"))
            })?;
            let mut first = in_log;
            for row in change.log_rows() {
                events.push(event);
                users.push(row.user);
                statuses.push(row.status);
                expiries.push(row.expires_at);
                claimed.push(claim);
                let (booked, waiting, version) = match first.take() {
                    Some(moved) => (moved.booked, moved.waiting, 1),
                    None => (0, 0, 0),
                };
                // At most a few tickets or places per change.
                moved_booked.push(booked as i16);
                moved_waiting.push(waiting as i16);
                moved_version.push(version);
            }
            if in_log.is_some() && !unfolded.contains(event) {
                unfolded.insert(event.to_owned());
            }
            if in_row == CountsMoved::default() && row_versions == 0 {
                continue;
            }
            match counts.iter_mut().find(|(id, ..)| *id == event) {
                Some((_, sum, versions)) => {
                    (*sum, *versions) = (sum.and(in_row), *versions + row_versions)
                }
                None => counts.push((event, in_row, row_versions)),
            }
        }
        drop(unfolded);
        let counted: Vec<&str> = counts.iter().map(|(id, ..)| *id).collect();
        let booked: Vec<i64> = counts.iter().map(|(_, moved, _)| moved.booked).collect();
        let held: Vec<i64> = counts.iter().map(|(_, moved, _)| moved.held).collect();
        let waiting: Vec<i64> = counts.iter().map(|(_, moved, _)| moved.waiting).collect();
        let versions: Vec<i64> = counts.iter().map(|(.., versions)| *versions).collect();
        let scopes: Vec<&str> = answers.iter().map(|a| a.id.scope.as_str()).collect();
        let keys: Vec<&str> = answers.iter().map(|a| a.id.key.as_str()).collect();
        let prints: Vec<&[u8]> = answers.iter().map(|a| &a.fingerprint[..]).collect();
        let codes: Vec<i32> = answers.iter().map(|a| a.answer.status.into()).collect();
        let bodies: Vec<&[u8]> = answers.iter().map(|a| &a.answer.body[..]).collect();
        let times: Vec<i64> = answers.iter().map(|a| a.stored_at).collect();
        drop(claims);
        let params: [&(dyn ToSql + Sync); 19] = [
            &events,
            &users,
            &statuses,
            &expiries,
            &claimed,
            &moved_booked,
            &moved_waiting,
            &moved_version,
            &counted,
            &booked,
            &held,
            &waiting,
            &versions,
            &scopes,
            &keys,
            &prints,
            &codes,
            &bodies,
            &times,
        ];
        let mut writer = self.writer(Reopen::No)?;
        let Writer {
            client,
            commit,
            orders,
            ..
        } = writer.as_mut().expect("connected");
        // The log's rows alone where there is nothing else (see `INSERT_ORDERS`).
        let (statement, params) = if counted.is_empty() && answers.is_empty() {
            (&*orders, &params[..8])
        } else {
            (&*commit, &params[..])
        };
        let rows = wait(async {
            if created.is_empty() && configured.is_empty() {
                // One statement, one round trip: its own transaction.
                return Ok::<_, StorageError>(client.query(statement, params).await?);
            }
            let tx = client.transaction().await?;
            if !created.is_empty() {
                // Held to the commit: creations of all instances take turns.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATION_LOCK])
                    .await?;
            }
            for (event, settings) in &created {
                let (total, open, mode, offer_secs, hold_secs) = settings_columns(settings);
                tx.execute(
                    "INSERT INTO events
                         (id, total_tickets, sales_open, waiting_list, offer_secs, hold_secs, created)
                     VALUES ($1, $2, $3, $4, $5, $6,
                         (SELECT coalesce(max(created), 0) + 1 FROM events))",
                    &[event, &total, &open, &mode, &offer_secs, &hold_secs],
                )
                .await?;
            }
            for (event, settings) in &configured {
                let (total, open, mode, offer_secs, hold_secs) = settings_columns(settings);
                tx.execute(
                    "UPDATE events SET total_tickets = $2, sales_open = $3, waiting_list = $4,
                         offer_secs = $5, hold_secs = $6
                     WHERE id = $1",
                    &[event, &total, &open, &mode, &offer_secs, &hold_secs],
                )
                .await?;
            }
            let rows = tx.query(statement, params).await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        // Numbered in the order inserted, which is the order given.
        let mut seqs: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        self.write(Reopen::Yes, async |tx| {
            tx.execute(
                "UPDATE readiness SET checked_at = extract(epoch FROM now())::bigint WHERE id = 1",
                &[],
            )
            .await?;
            Ok(())
        })
    }

    fn raw_fingerprints_before(&self) -> Result<i64, StorageError> {
        // Every answer stored in PostgreSQL has the canonical request's fingerprint.
        Ok(0)
    }

    fn load_answers(&self, cutoff: i64) -> Result<Vec<StoredKey>, StorageError> {
        let reader = self.reader()?;
        let rows = wait(reader.query(
            "SELECT scope, key, fingerprint, seq, stored_at FROM idempotency
             WHERE stored_at >= $1 ORDER BY seq",
            &[&cutoff],
        ))?;
        Ok(rows
            .iter()
            .map(|row| StoredKey {
                id: KeyId {
                    scope: row.get(0),
                    key: row.get(1),
                },
                fingerprint: row.get::<_, &[u8]>(2).try_into().unwrap_or_default(),
                seq: row.get(3),
                stored_at: row.get(4),
            })
            .collect())
    }

    fn find_answer(&self, id: &KeyId, since: i64) -> Result<Option<StoredKey>, StorageError> {
        let reader = self.reader()?;
        let row = wait(reader.query_opt(
            "SELECT fingerprint, seq, stored_at FROM idempotency
             WHERE scope = $1 AND key = $2 AND stored_at >= $3 ORDER BY seq LIMIT 1",
            &[&id.scope, &id.key, &since],
        ))?;
        Ok(row.map(|row| StoredKey {
            id: id.clone(),
            fingerprint: row.get::<_, &[u8]>(0).try_into().unwrap_or_default(),
            seq: row.get(1),
            stored_at: row.get(2),
        }))
    }

    fn load_answer(&self, seq: i64) -> Result<Option<Answer>, StorageError> {
        let reader = self.reader()?;
        let row = wait(reader.query_opt(
            "SELECT status, body FROM idempotency WHERE seq = $1",
            &[&seq],
        ))?;
        Ok(row.map(|row| Answer {
            status: row.get::<_, i32>(0).try_into().unwrap_or(500),
            body: row.get::<_, Vec<u8>>(1).into(),
        }))
    }

    /// Only what expired: `first_kept` comes from this instance's cap on
    /// keys in its memory, and the table holds every instance's answers,
    /// which another instance may still replay.
    fn forget_answers(
        &self,
        cutoff: i64,
        _first_kept: i64,
        limit: usize,
    ) -> Result<usize, StorageError> {
        let limit = limit as i64;
        self.write(Reopen::No, async |tx| {
            let forgotten = tx
                .execute(
                    "DELETE FROM idempotency WHERE stored_at < $1
                     AND seq IN (SELECT seq FROM idempotency ORDER BY seq LIMIT $2)",
                    &[&cutoff, &limit],
                )
                .await?;
            Ok(forgotten as usize)
        })
    }

    /// On a connection of its own, in one snapshot: a scan of the whole log
    /// must not hold up the reads queued behind it on the shared reader.
    fn superseded_rows(&self) -> Result<Vec<i64>, StorageError> {
        let mut client = self.connect(None)?;
        wait(async {
            let reader = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut loader = Loader::default();
            for row in reader
                .query(&format!("SELECT e.id, {SETTINGS} FROM {EVENTS}"), &[])
                .await?
            {
                let (version, settings) = settings_of(&row, 1)?;
                loader.event(row.get(0), settings, version, 0);
            }
            let no_params: [&str; 0] = [];
            let rows = reader
                .query_raw(
                    "SELECT seq, event_id, user_id, status, expires_at FROM order_log
                     ORDER BY seq DESC",
                    no_params,
                )
                .await?;
            pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                loader.order(row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))?;
            }
            Ok(loader.superseded())
        })
    }

    fn delete_superseded(&self, rows: &[i64]) -> Result<usize, StorageError> {
        self.write(Reopen::No, async |tx| {
            // Not a row whose counts are still to be folded: they would be lost.
            let deleted = tx
                .execute(
                    "DELETE FROM order_log o WHERE o.seq = ANY($1)
                     AND (o.moved_booked = 0 AND o.moved_waiting = 0 AND o.moved_version = 0
                          OR o.seq <= (SELECT counted_through FROM events WHERE id = o.event_id))",
                    &[&rows],
                )
                .await?;
            Ok(deleted as usize)
        })
    }

    fn totals(&self) -> Result<Totals, StorageError> {
        let reader = self.reader()?;
        let row = wait(reader.query_one(
            &format!(
                "SELECT count(*), coalesce(sum(e.booked + t.booked), 0)::bigint,
                     coalesce(sum(e.held), 0)::bigint, coalesce(sum(e.waiting + t.waiting), 0)::bigint
                 FROM {EVENTS}"
            ),
            &[],
        ))?;
        let count = |column| row.get::<_, i64>(column).max(0) as u64;
        Ok(Totals {
            events: count(0),
            booked: count(1),
            held: count(2),
            waiting: count(3),
        })
    }

    /// Through the partial index `events_holding`, less those that a live
    /// session owns.
    fn events_with_holds(&self) -> Result<Vec<EventId>, StorageError> {
        let reader = self.reader()?;
        let rows = wait(reader.query(
            concat!(
                "SELECT e.id FROM events e
                 WHERE e.held > 0 AND NOT EXISTS (
                     SELECT 1 FROM owners o WHERE o.event_id = e.id AND ",
                owner_lives!(),
                ")
                 ORDER BY e.created"
            ),
            &[],
        ))?;
        Ok(rows.iter().map(|row| EventId::stored(row.get(0))).collect())
    }

    fn list_events(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StorageError> {
        let reader = self.reader()?;
        let rows = wait(reader.query(
            &format!(
                "SELECT {LISTED}, {SETTINGS} FROM {EVENTS}
                 WHERE e.created > $1 ORDER BY e.created LIMIT $2"
            ),
            &[&after, &i64::from(limit)],
        ))?;
        rows.iter().map(stored_event_of).collect()
    }

    fn stored_event(&self, event: &EventId) -> Result<Option<StoredEvent>, StorageError> {
        let reader = self.reader()?;
        let row = wait(reader.query_opt(
            &format!("SELECT {LISTED}, {SETTINGS} FROM {EVENTS} WHERE e.id = $1"),
            &[&event.as_str()],
        ))?;
        row.as_ref().map(stored_event_of).transpose()
    }

    fn log_rows_at_most(&self) -> Result<u64, StorageError> {
        let reader = self.reader()?;
        let row = wait(reader.query_one(
            "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM order_log",
            &[],
        ))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    fn fences(&self) -> bool {
        true
    }

    fn claim(&self, event: &EventId) -> Result<Option<u64>, StorageError> {
        let mut writer = self.writer(Reopen::Yes)?;
        let Writer {
            client, key, claim, ..
        } = writer.as_mut().expect("connected");
        let claimed = wait(async {
            let tx = client.transaction().await?;
            tx.batch_execute(NOT_FLUSHED).await?;
            let row = tx.query_opt(&*claim, &[&event.as_str(), key]).await?;
            // Read before the commit: once committed, the claim must be known here.
            let number = row.map(|row| row.try_get::<_, i64>(0)).transpose()?;
            tx.commit().await?;
            Ok::<_, StorageError>(number)
        })?;
        let Some(number) = claimed else {
            return Ok(None);
        };
        self.claims().insert(event.as_str().into(), number);
        Ok(Some(self.current.load(Ordering::SeqCst)))
    }

    fn release(&self, event: &EventId) -> Result<(), StorageError> {
        let mut writer = self.writer(Reopen::No)?;
        let Writer { client, key, .. } = writer.as_mut().expect("connected");
        let released = wait(async {
            let tx = client.transaction().await?;
            tx.batch_execute(NOT_FLUSHED).await?;
            tx.execute(
                "DELETE FROM owners WHERE event_id = $1 AND owner = $2",
                &[&event.as_str(), key],
            )
            .await?;
            tx.commit().await
        });
        // Not let go, and no longer deciding for it: the session goes, and
        // with its lock every event it owned.
        released.inspect_err(|_| *writer = None)?;
        let mut claims = self.claims();
        claims.remove(event.as_str());
        // As the store's own map of owned events: not the room of every event once owned.
        if claims.len() * 4 < claims.capacity() {
            claims.shrink_to_fit();
        }
        Ok(())
    }

    fn request_handoff(&self, event: &EventId) -> Result<(), StorageError> {
        let reader = self.reader()?;
        wait(reader.execute(
            "SELECT pg_notify($1, $2)",
            &[&HANDOFF_CHANNEL, &event.as_str()],
        ))?;
        Ok(())
    }

    fn listen_for_handoffs(&self, deliver: Box<dyn Fn(EventId) + Send + Sync>) {
        let config = self.config.clone();
        self.io.handle.spawn(async move {
            loop {
                if let Err(error) = listen(&config, &deliver).await {
                    log::warn!("listening for hand-offs: {error}; again in {LISTEN_RETRY:?}");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        });
    }

    fn session(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    /// Starts folding the counts of the events committed since the last
    /// fold ([`FOLD_COUNTS`]) on the folder's connection, and returns the
    /// number of events it names, without waiting for it: commits go on
    /// meanwhile. The events of a fold that failed are kept for the next
    /// one; reads are right either way.
    fn catch_up(&self) -> Result<u64, StorageError> {
        if self.folding.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let events: Vec<String> = self.unfolded().drain().collect();
        if events.is_empty() {
            return Ok(0);
        }
        let client = match self.folder() {
            Ok(client) => client,
            Err(error) => {
                self.unfolded().extend(events);
                return Err(error);
            }
        };
        let count = events.len() as u64;
        let (unfolded, folding) = (self.unfolded.clone(), self.folding.clone());
        folding.store(true, Ordering::SeqCst);
        self.io.handle.spawn(async move {
            if let Err(error) = client.execute(FOLD_COUNTS, &[&events]).await {
                log::warn!("could not fold the log's counts into the events' rows: {error}");
                unfolded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(events);
            }
            folding.store(false, Ordering::SeqCst);
        });
        Ok(count)
    }

    fn load_event(&self, event: &EventId) -> Result<Option<(EventState, Vec<i64>)>, StorageError> {
        let reader = self.reader()?;
        wait(async {
            let Some(row) = reader
                .query_opt(
                    &format!(
                        "SELECT {SETTINGS}, e.booked + t.booked + e.waiting + t.waiting + e.held
                         FROM {EVENTS} WHERE e.id = $1"
                    ),
                    &[&event.as_str()],
                )
                .await?
            else {
                return Ok(None);
            };
            let mut loader = Loader::default();
            let (version, settings) = settings_of(&row, 0)?;
            let users = usize::try_from(row.try_get::<_, i64>(6)?).unwrap_or(0);
            loader.event(event.as_str(), settings, version, users);
            let rows = reader
                .query_raw(
                    "SELECT seq, user_id, status, expires_at FROM order_log
                     WHERE event_id = $1 ORDER BY seq DESC",
                    [event.as_str()],
                )
                .await?;
            pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                loader.order(
                    row.get(0),
                    event.as_str(),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                )?;
            }
            let mut stored = loader.finish()?;
            Ok(stored
                .events
                .pop()
                .map(|(_, state)| (state, stored.superseded)))
        })
    }
}
