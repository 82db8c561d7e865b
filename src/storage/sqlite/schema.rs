//! The schema of the database and its migrations, versioned in
//! `PRAGMA user_version`.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, TransactionBehavior};

use crate::storage::StorageError;

/// Stored in `PRAGMA user_version`; a file with a newer version is refused.
pub(super) const SCHEMA_VERSION: i64 = 9;

pub(super) const SCHEMA: &str = "
CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    total_tickets INTEGER NOT NULL CHECK (total_tickets > 0)
) WITHOUT ROWID;
CREATE TABLE order_log (
    seq      INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id),
    user_id  TEXT NOT NULL,
    -- Not `status IN (...)`: SQLite builds a temporary index for that on every insert.
    status   TEXT NOT NULL CHECK (status = 'booked' OR status = 'waiting' OR status = 'cancelled')
);
";

/// Version 2: the answers of idempotent requests, appended in commit order,
/// so `stored_at` grows with the rowid and the oldest rows are the expired ones.
const IDEMPOTENCY_SCHEMA: &str = "
CREATE TABLE idempotency (
    seq         INTEGER PRIMARY KEY,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    stored_at   INTEGER NOT NULL
);
";

/// Version 3: one row that the readiness probe rewrites, so that `/ready`
/// proves a transaction really reaches the disk.
const READINESS_SCHEMA: &str = "
CREATE TABLE readiness (
    id         INTEGER PRIMARY KEY,
    checked_at INTEGER NOT NULL,
    -- The room test: a row of a few pages, committed and deleted again.
    room       BLOB
);
INSERT INTO readiness (id, checked_at) VALUES (1, 0);
";

/// Version 4: the fingerprints of idempotent requests are taken over the
/// canonical request, no longer over the body as sent; the answers stored
/// before (rows below `raw_before`) keep theirs, and are matched that way.
/// And user ids are in NFC: see [`normalize_stored_users`].
const CANONICAL_SCHEMA: &str = "
CREATE TABLE fingerprints (raw_before INTEGER NOT NULL);
INSERT INTO fingerprints SELECT coalesce(max(seq), 0) + 1 FROM idempotency;
";

/// Version 5: each event keeps its counts of the last commit and its place
/// in creation order, so that events can be counted and listed without
/// reading their orders. Filled in by [`count_stored_orders`]. (Version 5
/// also indexed the log by event, in every commit: version 6 does it in batches.)
const EVENT_COUNTS_SCHEMA: &str = "
ALTER TABLE events ADD COLUMN created INTEGER;
ALTER TABLE events ADD COLUMN booked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
";

/// Version 6: events are read one at a time, when first asked for (see
/// `Directory`), so the log has an index by event. Not an SQLite index,
/// which every commit would write: a commit's bookings of many events would
/// each land on a page of their own. The store writes it in batches instead
/// (`Storage::catch_up`): the rows
/// after `orders_indexed.through` are not in it yet, and a read of an event
/// looks for its rows among them too.
const ORDERS_BY_EVENT_SCHEMA: &str = "
DROP INDEX IF EXISTS order_log_by_event;
CREATE TABLE orders_by_event (
    event_id TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (event_id, seq)
) WITHOUT ROWID;
INSERT INTO orders_by_event (event_id, seq)
    SELECT event_id, seq FROM order_log ORDER BY event_id, seq;
CREATE TABLE orders_indexed (through INTEGER NOT NULL);
INSERT INTO orders_indexed SELECT coalesce(max(seq), 0) FROM order_log;
";

/// Version 7: holds. The log's statuses gain `held` and `expired`, with the
/// hold's expiry (or lapse) in `expires_at` (milliseconds since the Unix
/// epoch, UTC); each event counts its `held` tickets, and the partial index
/// `events_holding` finds the events with live holds at a start without
/// reading every event. The wider `CHECK` is written by [`widen_statuses`].
const HOLDS_SCHEMA: &str = "
ALTER TABLE order_log ADD COLUMN expires_at INTEGER;
ALTER TABLE events ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_holding ON events (created) WHERE held > 0;
";

/// Version 8: each event's settings beside its tickets: whether sales are
/// open, its waiting list's mode (`assign` or `offer`, with `offer_secs`),
/// and its holds' duration (`NULL`: the server's); and the log's status
/// `offered`, a hold offered from the waiting list (see [`widen_statuses`]).
const SETTINGS_SCHEMA: &str = "
ALTER TABLE events ADD COLUMN sales_open INTEGER NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN waiting_list TEXT NOT NULL DEFAULT 'assign';
ALTER TABLE events ADD COLUMN offer_secs INTEGER;
ALTER TABLE events ADD COLUMN hold_secs INTEGER;
";

/// Version 9: each event's version, the number of its changes committed,
/// moved with its counts: what its status streams number their events by.
const VERSION_SCHEMA: &str = "
ALTER TABLE events ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
";

/// The `CHECK` on `order_log.status` before version 7 (in either spelling
/// version 1 had: the first releases wrote `IN`), from version 7, and from
/// version 8.
const STATUSES_1: &str = "CHECK (status = 'booked' OR status = 'waiting' OR status = 'cancelled')";
const STATUSES_1_IN: &str = "CHECK (status IN ('booked', 'waiting', 'cancelled'))";
const STATUSES_7: &str = "CHECK (status = 'booked' OR status = 'waiting' OR status = 'cancelled' \
     OR status = 'held' OR status = 'expired')";
const STATUSES_8: &str = "CHECK (status = 'booked' OR status = 'waiting' OR status = 'cancelled' \
     OR status = 'held' OR status = 'expired' OR status = 'offered')";

/// Widens the `CHECK` on the log's statuses from any of `before` to `after`
/// in place, without copying the log: SQLite's documented procedure for a change of a table's schema that
/// every stored row already satisfies ("Making Other Kinds Of Table Schema
/// Changes", <https://www.sqlite.org/lang_altertable.html#otheralter>): the
/// table's SQL text is rewritten in `sqlite_schema` with `writable_schema`
/// on, and `schema_version` is bumped so that every connection reads the
/// schema again. The integrity check of step 7 is left out: it reads the
/// whole file (minutes at 10 million orders), and the rewrite touches no
/// row or index.
fn widen_statuses(tx: &Connection, before: &[&str], after: &str) -> Result<(), StorageError> {
    let version: i64 = tx.pragma_query_value(None, "schema_version", |row| row.get(0))?;
    tx.pragma_update(None, "writable_schema", "ON")?;
    for before in before {
        tx.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ?1, ?2)
             WHERE type = 'table' AND name = 'order_log'",
            [before, after],
        )?;
    }
    tx.pragma_update(None, "schema_version", version + 1)?;
    tx.pragma_update(None, "writable_schema", "OFF")?;
    let widened: bool = tx.query_row(
        "SELECT instr(sql, ?1) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'order_log'",
        [after],
        |row| row.get(0),
    )?;
    if !widened {
        return Err(StorageError::Inconsistent(
            "order_log has not the CHECK on its statuses that the schema before wrote".into(),
        ));
    }
    Ok(())
}

/// Creates the schema in a new file, upgrades an older one; refuses a newer
/// one. A file already at this version is only read: a server must be able
/// to start, and read what it stored, on a disk with no room for a write.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let version = |conn: &Connection| {
        conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
    };
    let found = version(conn)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    StorageError::refuse_newer_schema(found, SCHEMA_VERSION)?;
    // Read again inside the write lock: another process may have migrated meanwhile.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = version(&tx)?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 1 {
        tx.execute_batch(SCHEMA)?;
    }
    if version < 2 {
        tx.execute_batch(IDEMPOTENCY_SCHEMA)?;
    }
    if version < 3 {
        tx.execute_batch(READINESS_SCHEMA)?;
    }
    let mut notes = Vec::new();
    if version < 4 {
        tx.execute_batch(CANONICAL_SCHEMA)?;
        notes = normalize_stored_users(&tx)?;
    }
    if version < 5 {
        tx.execute_batch(EVENT_COUNTS_SCHEMA)?;
        count_stored_orders(&tx)?;
        tx.execute_batch("CREATE UNIQUE INDEX events_by_creation ON events (created);")?;
    }
    if version < 6 {
        tx.execute_batch(ORDERS_BY_EVENT_SCHEMA)?;
    }
    if version < 7 {
        widen_statuses(&tx, &[STATUSES_1, STATUSES_1_IN], STATUSES_7)?;
        tx.execute_batch(HOLDS_SCHEMA)?;
    }
    if version < 8 {
        widen_statuses(&tx, &[STATUSES_7], STATUSES_8)?;
        tx.execute_batch(SETTINGS_SCHEMA)?;
    }
    if version < 9 {
        tx.execute_batch(VERSION_SCHEMA)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    // Only now: a commit that failed (a full disk) is tried again, and would say it all again.
    for note in notes {
        log::warn!("{note}");
    }
    Ok(())
}

/// Rewrites the stored user ids that are not in NFC (written before ids
/// were normalized: see [`crate::ids::normalize`]), so that each user's rows
/// carry one spelling, the one requests now arrive in. Where two stored
/// spellings of one event's user are the same id in NFC (two users then,
/// one now), the NFC spelling keeps the id, else the one whose first row
/// came first; the other's rows stay as they are, with the ticket or the
/// place they were acknowledged, but no request can name that user any
/// more. Each such case is logged. Runs once, in the migration to version 4.
/// Returns what to log once the migration is committed.
fn normalize_stored_users(tx: &Connection) -> Result<Vec<String>, StorageError> {
    // Only ids with a character beyond printable ASCII can change (ASCII is NFC).
    const BEYOND_ASCII: &str = "user_id GLOB '*[^ -~]*'";
    // (event, NFC form) -> the spellings not in NFC, in the order of their first rows.
    let mut renamed: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut rows: HashMap<(String, String), Vec<i64>> = HashMap::new();
    {
        let mut scan = tx.prepare(&format!(
            "SELECT seq, event_id, user_id FROM order_log WHERE {BEYOND_ASCII} ORDER BY seq"
        ))?;
        let mut found = scan.query([])?;
        while let Some(row) = found.next()? {
            let (seq, event, user): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let normal = crate::ids::normalize(&user);
            if normal == user {
                continue;
            }
            let spellings = renamed
                .entry((event.clone(), normal.into_owned()))
                .or_default();
            if !spellings.contains(&user) {
                spellings.push(user.clone());
            }
            rows.entry((event, user)).or_default().push(seq);
        }
    }
    if renamed.is_empty() {
        return Ok(Vec::new());
    }
    // Which NFC forms are stored as they are: one more pass (over the whole
    // log only if one of them is ASCII, as U+212A KELVIN SIGN's NFC is "K").
    let mut nfc_stored = HashSet::new();
    {
        let filter = match renamed.keys().any(|(_, normal)| normal.is_ascii()) {
            true => "1",
            false => BEYOND_ASCII,
        };
        let mut scan = tx.prepare(&format!(
            "SELECT event_id, user_id FROM order_log WHERE {filter}"
        ))?;
        let mut found = scan.query([])?;
        while let Some(row) = found.next()? {
            let key = (row.get::<_, String>(0)?, row.get::<_, String>(1)?);
            if renamed.contains_key(&key) {
                nfc_stored.insert(key);
            }
        }
    }
    let mut rename = tx.prepare("UPDATE order_log SET user_id = ?1 WHERE seq = ?2")?;
    let mut notes = Vec::new();
    let mut count = 0;
    for ((event, normal), spellings) in renamed {
        let nfc_stored = nfc_stored.contains(&(event.clone(), normal.clone()));
        let (keeper, others) = match nfc_stored {
            true => (None, &spellings[..]),
            false => (Some(&spellings[0]), &spellings[1..]),
        };
        if let Some(keeper) = keeper {
            for seq in &rows[&(event.clone(), keeper.clone())] {
                rename.execute(params![normal, seq])?;
            }
            count += 1;
        }
        for other in others {
            notes.push(format!(
                "event {event}: stored users {other:?} and {normal:?} are one user in NFC; \
                 {:?} keeps the id, {other:?} keeps its rows and standing but can no longer be named",
                keeper.unwrap_or(&normal)
            ));
        }
    }
    notes.push(format!("user ids in NFC: {count} stored users renamed"));
    Ok(notes)
}

/// Gives each stored event its counts, from one replay of the log, and its
/// place in creation order: the order of its first row in the log (events
/// with none after, by id). Runs once, in the migration to version 5.
fn count_stored_orders(tx: &Connection) -> Result<(), StorageError> {
    let stored = super::read_log(tx, super::LogSchema::BeforeHolds)?.finish()?;
    // One pass over the log, grouped: the log has no index by event yet.
    let mut first_rows = tx.prepare(
        "SELECT id, first FROM events LEFT JOIN
             (SELECT event_id, min(seq) AS first FROM order_log GROUP BY event_id)
         ON event_id = id",
    )?;
    let mut order: Vec<(Option<i64>, String)> = first_rows
        .query_map([], |row| Ok((row.get(1)?, row.get(0)?)))?
        .collect::<Result<_, _>>()?;
    order.sort_by(|(a_row, a_id), (b_row, b_id)| {
        (a_row.is_none(), a_row, a_id).cmp(&(b_row.is_none(), b_row, b_id))
    });
    let counts: HashMap<&str, _> = stored
        .events
        .iter()
        .map(|(id, state)| (id.as_str(), state.summary()))
        .collect();
    let mut update =
        tx.prepare("UPDATE events SET created = ?2, booked = ?3, waiting = ?4 WHERE id = ?1")?;
    for (created, (_, id)) in (1i64..).zip(&order) {
        let (booked, waiting) = counts
            .get(id.as_str())
            .map_or((0, 0), |summary| (summary.booked_tickets, summary.waiting));
        update.execute(params![id, created, booked, waiting as i64])?;
    }
    Ok(())
}
