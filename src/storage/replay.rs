//! The replay of the order log: each user's last row is its status, and the
//! waiting list is the waiting users in row order. One event's rows when it is
//! activated; the whole log's to find superseded rows, and in a migration.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;

use super::StorageError;
use crate::booking::{EventSettings, EventState, StoredHold, StoredSeats, UtcMillis};
use crate::ids::EventId;

/// Replays the log: a user's last row is its status, and the waiting list is
/// the waiting users in the order of the rows that made them wait.
#[derive(Default)]
pub(super) struct Loader {
    pub(super) events: HashMap<EventId, ReplayedEvent, foldhash::fast::RandomState>,
    /// Rows a later row of the same user replaced, in the order found.
    pub(super) superseded: Vec<i64>,
}

pub(super) struct ReplayedEvent {
    settings: EventSettings,
    /// As the event's row holds it (see `Summary::version`).
    version: u64,
    /// Each user's last status, with its row (`seq`): the replay order.
    users: hashbrown::HashMap<Arc<str>, (Stored, i64), foldhash::fast::RandomState>,
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    Booked,
    Waiting,
    /// Held until then; offered from the queue, or not.
    Held(UtcMillis, bool),
    Cancelled,
    Expired(UtcMillis),
}

impl Loader {
    /// An event whose rows follow; about `users` of them (its counts as
    /// stored: booked, waiting and held), for the room of its map, which
    /// would otherwise be rehashed at every doubling of a large event.
    pub(super) fn event(&mut self, id: &str, settings: EventSettings, version: u64, users: usize) {
        let users = hashbrown::HashMap::with_capacity_and_hasher(users, Default::default());
        self.events.insert(
            EventId::stored(id),
            ReplayedEvent {
                settings,
                version,
                users,
            },
        );
    }

    /// Replays row `seq`; rows come in ascending `seq`. `expires_at` as
    /// in [`LogRow`](super::LogRow).
    pub(super) fn order(
        &mut self,
        seq: i64,
        event: &str,
        user: &str,
        status: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StorageError> {
        let stored = self.events.get_mut(event).ok_or_else(|| {
            StorageError::Inconsistent(format!("order of {user:?} at unknown event {event}"))
        })?;
        let status = match status {
            "booked" => Stored::Booked,
            "waiting" => Stored::Waiting,
            "cancelled" => Stored::Cancelled,
            "held" | "offered" | "expired" => {
                let at = UtcMillis(expires_at.ok_or_else(|| {
                    StorageError::Inconsistent(format!("{status} row of {user:?} without a time"))
                })?);
                match status {
                    "held" => Stored::Held(at, false),
                    "offered" => Stored::Held(at, true),
                    _ => Stored::Expired(at),
                }
            }
            other => {
                return Err(StorageError::Inconsistent(format!(
                    "order of {user:?} has status {other:?}"
                )))
            }
        };
        match stored.users.entry_ref(user) {
            EntryRef::Occupied(mut last) => {
                self.superseded.push(last.get().1);
                last.insert((status, seq));
            }
            EntryRef::Vacant(new) => {
                new.insert((status, seq));
            }
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<StoredOrders, StorageError> {
        let events = self
            .events
            .into_iter()
            .map(|(id, stored)| {
                let mut seats = StoredSeats::default();
                let (mut waiting, mut held) = (Vec::new(), Vec::new());
                for (user, (status, row)) in stored.users {
                    match status {
                        Stored::Booked => seats.booked.push(user),
                        Stored::Waiting => waiting.push((row, user)),
                        Stored::Held(expires_at, offered) => held.push((
                            row,
                            StoredHold {
                                user,
                                expires_at,
                                offered,
                            },
                        )),
                        Stored::Cancelled => seats.cancelled.push(user),
                        Stored::Expired(at) => seats.expired.push((user, at)),
                    }
                }
                held.sort_unstable_by_key(|(row, _)| *row);
                seats.held = held.into_iter().map(|(_, hold)| hold).collect();
                let taken = seats.booked.len() + seats.held.len();
                let total = stored.settings.total_tickets;
                if taken > total as usize {
                    let message =
                        format!("event {id} has {taken} tickets booked or held of {total}");
                    return Err(StorageError::Inconsistent(message));
                }
                waiting.sort_unstable_by_key(|(row, _)| *row);
                seats.waiting = waiting.into_iter().map(|(_, user)| user).collect();
                let state = EventState::restore(stored.settings, seats);
                Ok((id, state.at_version(stored.version)))
            })
            .collect::<Result<_, _>>()?;
        Ok(StoredOrders {
            events,
            superseded: self.superseded,
        })
    }
}
