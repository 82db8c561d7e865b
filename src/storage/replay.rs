//! The replay of the order log, newest row first (see `booking::Restoring`):
//! each user's newest row is its status, and the rows of the same user
//! before it are superseded. One event's rows when it is activated; the
//! whole log's to find superseded rows, and in a migration.

use std::collections::HashMap;

use super::StorageError;
use crate::booking::{EventSettings, EventState, LoggedSeat, Overbooked, Restoring, UtcMillis};
use crate::ids::EventId;

/// Replays the log, newest row first.
#[derive(Default)]
pub(super) struct Loader {
    events: HashMap<EventId, Restoring, foldhash::fast::RandomState>,
    /// Rows a newer row of the same user replaced, newest first.
    superseded: Vec<i64>,
}

/// What the order log holds, as one pass over it reads it.
pub(super) struct StoredOrders {
    pub events: Vec<(EventId, EventState)>,
    /// Rows (`seq`, ascending) that a later row of the same user at the same
    /// event replaced. The state above is read from each user's last row
    /// alone, so these can be deleted without changing it: the log's
    /// compaction.
    pub superseded: Vec<i64>,
}

impl Loader {
    /// An event whose rows follow; about `users` of them (its counts as
    /// stored: booked, waiting and held), for the room of its map.
    pub(super) fn event(&mut self, id: &str, settings: EventSettings, version: u64, users: usize) {
        self.events.insert(
            EventId::stored(id),
            Restoring::new(settings, version, users),
        );
    }

    /// Replays row `seq`; rows come in *descending* `seq`, newest first.
    /// `expires_at` as in [`LogRow`](super::LogRow).
    pub(super) fn order(
        &mut self,
        seq: i64,
        event: &str,
        user: &str,
        status: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StorageError> {
        let seat = logged_seat(user, status, expires_at)?;
        if !restoring(&mut self.events, event)?.row(user, seat) {
            self.superseded.push(seq);
        }
        Ok(())
    }

    /// Replays one event's `rows`, read oldest first (see [`EventRows`]).
    pub(super) fn event_rows(&mut self, event: &str, rows: EventRows) -> Result<(), StorageError> {
        let restoring = restoring(&mut self.events, event)?;
        let mut end = rows.users.len();
        for row in rows.rows.iter().rev() {
            let start = row.user_start as usize;
            if !restoring.row(&rows.users[start..end], row.seat) {
                self.superseded.push(row.seq);
            }
            end = start;
        }
        Ok(())
    }

    /// The rows superseded, ascending, without the events' states.
    pub(super) fn superseded(mut self) -> Vec<i64> {
        self.superseded.reverse();
        self.superseded
    }

    pub(super) fn finish(mut self) -> Result<StoredOrders, StorageError> {
        let events = std::mem::take(&mut self.events)
            .into_iter()
            .map(|(id, restoring)| match restoring.finish() {
                Ok(state) => Ok((id, state)),
                Err(Overbooked { taken, total }) => Err(StorageError::Inconsistent(format!(
                    "event {id} has {taken} tickets booked or held of {total}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(StoredOrders {
            events,
            superseded: self.superseded(),
        })
    }
}

/// The event whose rows these are: one the loader was told of.
fn restoring<'a>(
    events: &'a mut HashMap<EventId, Restoring, foldhash::fast::RandomState>,
    event: &str,
) -> Result<&'a mut Restoring, StorageError> {
    events
        .get_mut(event)
        .ok_or_else(|| StorageError::Inconsistent(format!("orders of unknown event {event}")))
}

/// One event's rows, read oldest first and kept to be replayed newest
/// first: for SQLite, whose scan of an index backwards (`ORDER BY seq DESC`)
/// took about a quarter longer than forwards at a million rows. Compact:
/// the users' ids in one string, each row 32 bytes besides.
#[derive(Default)]
pub(super) struct EventRows {
    rows: Vec<EventRow>,
    users: String,
}

struct EventRow {
    seq: i64,
    seat: LoggedSeat,
    /// Where its user's id starts in `EventRows::users`; the next row's start ends it.
    user_start: u32,
}

impl EventRows {
    /// Rows of about `count` rows.
    pub(super) fn with_capacity(count: usize) -> Self {
        EventRows {
            rows: Vec::with_capacity(count),
            users: String::new(),
        }
    }

    /// Keeps row `seq`; rows come in ascending `seq`.
    pub(super) fn push(
        &mut self,
        seq: i64,
        user: &str,
        status: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StorageError> {
        let user_start = u32::try_from(self.users.len())
            .map_err(|_| StorageError::Inconsistent("an event's user ids exceed 4 GiB".into()))?;
        let seat = logged_seat(user, status, expires_at)?;
        self.users.push_str(user);
        self.rows.push(EventRow {
            seq,
            seat,
            user_start,
        });
        Ok(())
    }
}

/// What a row of the log with `status` (and `expires_at`, as in
/// [`LogRow`](super::LogRow)) says of `user`.
fn logged_seat(
    user: &str,
    status: &str,
    expires_at: Option<i64>,
) -> Result<LoggedSeat, StorageError> {
    Ok(match status {
        "booked" => LoggedSeat::Booked,
        "waiting" => LoggedSeat::Waiting,
        "cancelled" => LoggedSeat::Cancelled,
        "held" | "offered" | "expired" => {
            let at = UtcMillis(expires_at.ok_or_else(|| {
                StorageError::Inconsistent(format!("{status} row of {user:?} without a time"))
            })?);
            match status {
                "expired" => LoggedSeat::Expired(at),
                _ => LoggedSeat::Held {
                    expires_at: at,
                    offered: status == "offered",
                },
            }
        }
        other => {
            return Err(StorageError::Inconsistent(format!(
                "order of {user:?} has status {other:?}"
            )))
        }
    })
}
