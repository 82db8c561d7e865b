//! An event's state read back from its order log in one pass, newest row
//! first.
//!
//! A user's newest row is its status; every older row of the same user is
//! superseded. Read newest first, the first row of a user is the one that
//! counts, so each user goes into the event's map once, with its final
//! seat: no map of the replay to copy into the event's afterwards (at a
//! million users, the copy cost as much again as the replay). The waiting
//! list is the waiting users in the order of their rows, which is the
//! reverse of the order they are read in.

use hashbrown::hash_map::EntryRef;

use crate::ids::UserKey;

use super::{EventSettings, EventState, Seat, UtcMillis, WaitingList};

/// What one row of the order log says of its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedSeat {
    Booked,
    Waiting,
    /// Held until `expires_at`; `offered` from the waiting list.
    Held {
        expires_at: UtcMillis,
        offered: bool,
    },
    Cancelled,
    /// A hold that lapsed then.
    Expired(UtcMillis),
}

/// The log holds more tickets booked or held than the event has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overbooked {
    pub taken: usize,
    pub total: u32,
}

/// An event's state being read from its log, newest row first.
#[derive(Debug)]
pub struct Restoring {
    state: EventState,
    /// The waiting users as read, newest first: the queue backwards. Each
    /// one's seat is `Waiting(i)` with `i` its index here until `finish`.
    waiting: Vec<UserKey>,
    /// The holds as read, newest first.
    held: Vec<(UserKey, UtcMillis, bool)>,
}

impl Restoring {
    /// An event whose rows follow, at the `version` stored with it;
    /// `users` is about how many users they name (its stored counts), the
    /// room of its map, which would otherwise be rehashed at each doubling.
    pub fn new(settings: EventSettings, version: u64, users: usize) -> Self {
        let mut state = EventState::new(settings).at_version(version);
        state.users.reserve(users);
        Restoring {
            state,
            waiting: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Reads the row that put `user` in `seat`. Rows come newest first:
    /// `false` if a newer row of the user was read already, so this one is
    /// superseded and changes nothing.
    pub fn row(&mut self, user: &str, seat: LoggedSeat) -> bool {
        let EntryRef::Vacant(vacant) = self.state.users.entry_ref(user) else {
            return false;
        };
        let user: UserKey = UserKey::from(user);
        let seat = match seat {
            LoggedSeat::Booked => {
                self.state.booked += 1;
                Seat::Booked
            }
            LoggedSeat::Waiting => {
                self.waiting.push(user.clone());
                Seat::Waiting(self.waiting.len() as u64 - 1)
            }
            LoggedSeat::Held {
                expires_at,
                offered,
            } => {
                self.held.push((user.clone(), expires_at, offered));
                Seat::Held { offered }
            }
            LoggedSeat::Cancelled => Seat::Cancelled,
            LoggedSeat::Expired(at) => Seat::Expired(at),
        };
        vacant.insert_with_key(user, seat);
        true
    }

    /// The event's state. Holds whose expiry passed are live until
    /// [`EventState::lapse_due`] ends them.
    pub fn finish(self) -> Result<EventState, Overbooked> {
        let Restoring {
            mut state,
            mut waiting,
            held,
        } = self;
        let taken = state.booked as usize + held.len();
        let total = state.settings.total_tickets;
        if taken > total as usize {
            return Err(Overbooked { taken, total });
        }
        // Oldest first: holds are taken, and the queue joined, in row order.
        for (user, expires_at, offered) in held.into_iter().rev() {
            state.set_held(user, expires_at, offered);
        }
        let last = waiting.len() as u64;
        if last > 0 {
            // In place, without hashing a key: index i from the back is place last - 1 - i.
            for seat in state.users.values_mut() {
                if let Seat::Waiting(read_as) = seat {
                    *seat = Seat::Waiting(last - 1 - *read_as);
                }
            }
        }
        waiting.reverse();
        state.waiting = WaitingList::from_users(waiting);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::{Standing, Summary};

    /// Reads `rows`, given oldest first as the log holds them.
    fn restored(
        total: u32,
        rows: &[(&str, LoggedSeat)],
    ) -> (Result<EventState, Overbooked>, usize) {
        let mut restoring = Restoring::new(EventSettings::new(total), 7, 0);
        let superseded = rows
            .iter()
            .rev()
            .filter(|(user, seat)| !restoring.row(user, *seat))
            .count();
        (restoring.finish(), superseded)
    }

    #[test]
    fn a_users_newest_row_is_its_seat_and_the_queue_keeps_row_order() {
        let (state, superseded) = restored(
            1,
            &[
                ("a", LoggedSeat::Booked),
                ("b", LoggedSeat::Waiting),
                ("c", LoggedSeat::Waiting),
                ("z", LoggedSeat::Waiting),
                ("z", LoggedSeat::Cancelled),
                ("b", LoggedSeat::Cancelled),
                ("b", LoggedSeat::Waiting),
            ],
        );
        let state = state.unwrap();
        assert_eq!(superseded, 3);
        assert_eq!(
            state.summary(),
            Summary {
                version: 7,
                settings: EventSettings::new(1),
                booked_tickets: 1,
                held_tickets: 0,
                waiting: 2
            }
        );
        assert_eq!(state.standing("a"), Some(Standing::Booked));
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        assert_eq!(state.standing("b"), Some(Standing::Waiting { position: 2 }));
        assert_eq!(state.standing("z"), Some(Standing::Cancelled));
    }

    #[test]
    fn holds_keep_their_expiries_and_order() {
        let held = |at, offered| LoggedSeat::Held {
            expires_at: UtcMillis(at),
            offered,
        };
        let (state, _) = restored(
            3,
            &[
                ("h", held(500, false)),
                ("o", held(500, true)),
                ("x", held(50, false)),
                ("x", LoggedSeat::Expired(UtcMillis(100))),
                ("b", LoggedSeat::Booked),
                ("w", LoggedSeat::Waiting),
            ],
        );
        let mut state = state.unwrap();
        assert_eq!(state.summary().held_tickets, 2);
        assert_eq!(state.next_expiry(), Some(UtcMillis(500)));
        assert_eq!(
            state.standing("x"),
            Some(Standing::Expired {
                expired_at: UtcMillis(100)
            })
        );
        // Of two holds of one expiry, the one taken first lapses first.
        assert!(state.lapse_next(UtcMillis(500)).is_some());
        assert_eq!(
            state.standing("h"),
            Some(Standing::Expired {
                expired_at: UtcMillis(500)
            })
        );
        assert_eq!(state.summary().held_tickets, 1);
    }

    #[test]
    fn more_tickets_taken_than_the_event_has_is_refused() {
        let (state, _) = restored(1, &[("a", LoggedSeat::Booked), ("b", LoggedSeat::Booked)]);
        assert_eq!(state.unwrap_err(), Overbooked { taken: 2, total: 1 });
    }
}
