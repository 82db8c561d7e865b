//! The PostgreSQL schema and its migrations, versioned in table
//! `booking_schema`. Several instances may start at once against one
//! database: each migrates inside a transaction that first takes a
//! transaction-level advisory lock ([`MIGRATION_LOCK`]), so one migrates and
//! the others then find the current version.

use tokio_postgres::Client;

use super::super::StorageError;

/// Stored in `booking_schema.version`; a database with a newer one is refused.
pub(super) const SCHEMA_VERSION: i64 = 9;

/// The advisory lock key that serializes migrations (the bytes of "evbook-m").
const MIGRATION_LOCK: i64 = 0x6576_626f_6f6b_2d6d;

/// Version 1: the tables of the SQLite schema at its version 6, with
/// PostgreSQL's own types: an identity column for the log's order, `bytea`
/// for fingerprints and bodies, and an ordinary index of the log by event
/// (PostgreSQL writes an index's pages to its WAL as SQLite does, but no
/// benchmark has asked yet for anything else).
const SCHEMA: &str = "
CREATE TABLE events (
    id            text PRIMARY KEY,
    total_tickets bigint NOT NULL CHECK (total_tickets > 0),
    created       bigint NOT NULL UNIQUE,
    booked        bigint NOT NULL DEFAULT 0,
    waiting       bigint NOT NULL DEFAULT 0
);
CREATE TABLE order_log (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL REFERENCES events (id),
    user_id  text NOT NULL,
    status   text NOT NULL CHECK (status IN ('booked', 'waiting', 'cancelled'))
);
CREATE INDEX order_log_by_event ON order_log (event_id, seq);
CREATE TABLE idempotency (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text NOT NULL,
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      integer NOT NULL,
    body        bytea NOT NULL,
    stored_at   bigint NOT NULL
);
-- A retry may reach an instance that did not store its answer: it looks the key up.
CREATE INDEX idempotency_by_key ON idempotency (scope, key);
CREATE TABLE readiness (
    id         integer PRIMARY KEY,
    checked_at bigint NOT NULL
);
INSERT INTO readiness VALUES (1, 0);
";

/// Version 2: each row of the log says under which ownership of its event
/// it was committed. A claim of an event takes the next number of sequence
/// `ownerships` once it holds the event (its lock before version 9, its
/// row of `owners` since), so along one event's log
/// (by `seq`) the numbers never go down: rows of two owners interleaved
/// would break that, which the cluster's tests check. `NULL` on rows
/// committed before version 2.
/// The sequence keeps the default `CACHE 1`: with a cache, each session
/// would take numbers from a block of its own, out of the claims' order.
const OWNERSHIPS: &str = "
CREATE SEQUENCE ownerships;
ALTER TABLE order_log ADD COLUMN ownership bigint;
";

/// Version 3: holds, as SQLite's version 7. The log's statuses gain `held`
/// and `expired`, with the hold's expiry (or lapse) in `expires_at`
/// (milliseconds since the Unix epoch, UTC); each event counts its `held`
/// tickets; `events_holding` finds the events with live holds. The wider
/// `CHECK` is added `NOT VALID`: every stored row satisfies the narrower one
/// it replaces, and a validation would read the whole log
/// (<https://www.postgresql.org/docs/current/sql-altertable.html>).
const HOLDS: &str = "
ALTER TABLE order_log DROP CONSTRAINT order_log_status_check;
ALTER TABLE order_log ADD CONSTRAINT order_log_status_check
    CHECK (status IN ('booked', 'waiting', 'cancelled', 'held', 'expired')) NOT VALID;
ALTER TABLE order_log ADD COLUMN expires_at bigint;
ALTER TABLE events ADD COLUMN held bigint NOT NULL DEFAULT 0;
CREATE INDEX events_holding ON events (created) WHERE held > 0;
";

/// Version 4: each event's settings, as SQLite's version 8: whether sales
/// are open, its waiting list's mode (`assign` or `offer`, with
/// `offer_secs`), its holds' duration (`NULL`: the server's); and the log's
/// status `offered`, a hold offered from the waiting list.
const SETTINGS: &str = "
ALTER TABLE events ADD COLUMN sales_open boolean NOT NULL DEFAULT true,
    ADD COLUMN waiting_list text NOT NULL DEFAULT 'assign'
        CHECK (waiting_list IN ('assign', 'offer')),
    ADD COLUMN offer_secs bigint,
    ADD COLUMN hold_secs bigint;
ALTER TABLE order_log DROP CONSTRAINT order_log_status_check;
ALTER TABLE order_log ADD CONSTRAINT order_log_status_check
    CHECK (status IN ('booked', 'waiting', 'cancelled', 'held', 'expired', 'offered')) NOT VALID;
";

/// Version 5: each event's version, the number of its changes committed,
/// as SQLite's version 9.
const VERSIONS: &str = "ALTER TABLE events ADD COLUMN version bigint NOT NULL DEFAULT 0;";

/// Version 6: the log's foreign key to `events` goes. PostgreSQL checks a
/// foreign key with a trigger per inserted row, which looks the event up and
/// locks its row `FOR KEY SHARE`
/// (<https://www.postgresql.org/docs/current/ddl-constraints.html#DDL-CONSTRAINTS-FK>,
/// <https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-ROWS>):
/// a quarter of the writer's time on a hot event, where the same batch has
/// just updated that row. The rule holds without it: an instance writes
/// rows only for an event it claimed after reading the event's row, the
/// batch that writes them moves that row's counts, and no event is ever
/// deleted. SQLite keeps its foreign key, checked in its own process.
const NO_LOG_FOREIGN_KEY: &str =
    "ALTER TABLE order_log DROP CONSTRAINT IF EXISTS order_log_event_id_fkey;";

/// Version 7: an order's change moves its event's booked tickets, waiting
/// users and version through its first row in the log (`moved_booked`,
/// `moved_waiting`, `moved_version`), and the writer folds them into the
/// event's row about once a second (`counted_through`: the last row
/// folded). Moving the row at each commit cost about a third of
/// PostgreSQL's time when a batch held many events (docs/performance.md).
/// A read adds the rows not folded yet to the row's counts, in one
/// snapshot, so it finds the counts of every committed change. Held
/// tickets still move at each commit: the partial index `events_holding`
/// finds events with holds to lapse by them. Rows logged before version 7
/// move nothing: their counts are already in their event's row.
const COUNTS_IN_LOG: &str = "
ALTER TABLE order_log ADD COLUMN moved_booked smallint NOT NULL DEFAULT 0,
    ADD COLUMN moved_waiting smallint NOT NULL DEFAULT 0,
    ADD COLUMN moved_version smallint NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN counted_through bigint NOT NULL DEFAULT 0;
";

/// Version 8: ids compare byte by byte (`COLLATE "C"`). They are opaque
/// keys, which no language's order applies to; under the database's locale
/// (`initdb`'s, e.g. `en_US.UTF-8` or `C.UTF-8`) every comparison in the
/// indexes by event and by key went through the C library's `strcoll`,
/// where the `C` collation compares bytes
/// (<https://www.postgresql.org/docs/current/collation.html>). The tables
/// are not rewritten; their indexes on these columns are rebuilt
/// (<https://www.postgresql.org/docs/current/sql-altertable.html>), once,
/// under the migration's lock, which also blocks the instances already
/// running on these tables until it commits. Changing a column's type drops
/// its statistics: `ANALYZE` gathers them again.
const BYTE_ORDER_IDS: &str = r#"
ALTER TABLE events ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE order_log ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE idempotency ALTER COLUMN scope TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";
ANALYZE events, order_log, idempotency;
"#;

/// Version 9: an event's owner is named in `owners` (its writer's session,
/// by a number from sequence `writers`: integers, which the advisory lock
/// on the number takes, round again after 2^31 sessions), and fenced by
/// one advisory lock per session instead of one per event (see the module
/// comment of `mod.rs`): PostgreSQL walks every lock a session holds at
/// each of its commits. A release deletes its row; the row of an owner
/// that died stays until the event is claimed again, or a new session
/// given the same number deletes it.
///
/// The log's column `ownership` becomes `claim`, the number of the claim
/// under which the row was committed, as before. Renamed, it is a fence:
/// instances of version 8 own events by locks that version 9 does not look
/// at, and each of their commits of an event's changes writes that column,
/// so from the moment this migration commits they commit no such change
/// (their statements are parsed again against the changed table,
/// <https://www.postgresql.org/docs/current/sql-prepare.html>) and never
/// decide for an event beside an instance of version 9. Their readiness
/// probe still passes: it writes elsewhere.
const OWNERS: &str = r#"
CREATE TABLE owners (
    event_id text COLLATE "C" PRIMARY KEY,
    owner    integer NOT NULL
);
CREATE SEQUENCE writers AS integer CYCLE;
ALTER TABLE order_log RENAME COLUMN ownership TO claim;
"#;

/// Creates the schema in an empty database, migrates an older one, refuses
/// a newer one. Safe when
/// several instances start at once (see the module's comment).
pub(super) async fn migrate(client: &mut Client) -> Result<(), StorageError> {
    let tx = client.transaction().await?;
    // A migration may rebuild indexes of a large log (version 8), and the
    // instances starting beside it wait for its lock: neither is cut short
    // by the session's limits, meant for a request's statements.
    tx.batch_execute("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0")
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS booking_schema (version bigint NOT NULL)")
        .await?;
    let version: i64 = tx
        .query_opt("SELECT version FROM booking_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    StorageError::refuse_newer_schema(version, SCHEMA_VERSION)?;
    match version {
        0 => log::info!("creating the PostgreSQL schema, version {SCHEMA_VERSION}"),
        _ => {
            log::info!("migrating the PostgreSQL schema from version {version} to {SCHEMA_VERSION}")
        }
    }
    if version < 1 {
        tx.batch_execute(SCHEMA).await?;
        tx.execute("INSERT INTO booking_schema VALUES (1)", &[])
            .await?;
    }
    if version < 2 {
        tx.batch_execute(OWNERSHIPS).await?;
        tx.execute("UPDATE booking_schema SET version = 2", &[])
            .await?;
    }
    if version < 3 {
        tx.batch_execute(HOLDS).await?;
        tx.execute("UPDATE booking_schema SET version = 3", &[])
            .await?;
    }
    if version < 4 {
        tx.batch_execute(SETTINGS).await?;
        tx.execute("UPDATE booking_schema SET version = 4", &[])
            .await?;
    }
    if version < 5 {
        tx.batch_execute(VERSIONS).await?;
        tx.execute("UPDATE booking_schema SET version = 5", &[])
            .await?;
    }
    if version < 6 {
        tx.batch_execute(NO_LOG_FOREIGN_KEY).await?;
        tx.execute("UPDATE booking_schema SET version = 6", &[])
            .await?;
    }
    if version < 7 {
        tx.batch_execute(COUNTS_IN_LOG).await?;
        tx.execute("UPDATE booking_schema SET version = 7", &[])
            .await?;
    }
    if version < 8 {
        tx.batch_execute(BYTE_ORDER_IDS).await?;
        tx.execute("UPDATE booking_schema SET version = 8", &[])
            .await?;
    }
    if version < 9 {
        tx.batch_execute(OWNERS).await?;
        tx.execute("UPDATE booking_schema SET version = 9", &[])
            .await?;
    }
    tx.commit().await?;
    log::info!("PostgreSQL schema at version {SCHEMA_VERSION}");
    Ok(())
}
