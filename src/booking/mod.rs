//! The booking rules of one event, as plain data: no actors, no I/O.
//!
//! [`EventState`] decides every book and cancel synchronously and says what
//! changed as an [`OrderUpdate`], which the event actor hands to storage. The
//! same state is rebuilt from storage on start-up and after a failed commit.

mod waiting_list;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

pub use waiting_list::WaitingList;

/// What a successful booking gave the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookOutcome {
    Booked,
    /// Sold out: the user joined the waiting list at this 1-based place.
    Waiting {
        position: u64,
    },
}

/// What a successful cancellation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The user's ticket went back on sale, or the user left the waiting list.
    Cancelled,
    /// The user's ticket went to the head of the waiting list, this user.
    Reassigned { to: Arc<str> },
}

/// Why a request was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An initialize for an event that exists (or is being created).
    AlreadyInitialized,
    AlreadyBooked,
    AlreadyWaiting,
    BookingNotFound,
}

/// One decided change to the stored orders, in the order it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderUpdate {
    Booked(Arc<str>),
    Waiting(Arc<str>),
    /// A ticket went back on sale: nobody was waiting for it.
    Cancelled(Arc<str>),
    /// A waiting user gave up the place.
    LeftWaitingList(Arc<str>),
    /// One step, two rows: `cancelled` gave up the ticket that `promoted` now holds.
    Reassigned {
        cancelled: Arc<str>,
        promoted: Arc<str>,
    },
}

impl OrderUpdate {
    /// What it changes in the event's counts: (booked tickets, waiting users).
    pub fn counts(&self) -> (i64, i64) {
        match self {
            OrderUpdate::Booked(_) => (1, 0),
            OrderUpdate::Waiting(_) => (0, 1),
            OrderUpdate::Cancelled(_) => (-1, 0),
            OrderUpdate::LeftWaitingList(_) => (0, -1),
            // The ticket changes hands; the queue is one shorter.
            OrderUpdate::Reassigned { .. } => (0, -1),
        }
    }

    /// Rows it appends to the order log.
    pub fn rows(&self) -> u64 {
        match self {
            OrderUpdate::Reassigned { .. } => 2,
            _ => 1,
        }
    }

    /// Rows of the order log this update replaces for good: a cancellation
    /// replaces the user's booked or waiting row, a reassignment the promoted
    /// user's waiting row as well. A booking replaces the row of a user who
    /// cancelled before, if there is one: not counted here, and never more
    /// than the cancellations.
    pub fn rows_replaced(&self) -> u64 {
        match self {
            OrderUpdate::Booked(_) | OrderUpdate::Waiting(_) => 0,
            OrderUpdate::Cancelled(_) | OrderUpdate::LeftWaitingList(_) => 1,
            OrderUpdate::Reassigned { .. } => 2,
        }
    }
}

/// A user's standing at an event, as the status endpoint reports it: on the
/// wire, `{"status": "booked"}`, `{"status": "waiting", "position": 2}` or
/// `{"status": "cancelled"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Standing {
    Booked,
    Waiting {
        /// 1-based place in the waiting list.
        #[schema(minimum = 1)]
        position: u64,
    },
    /// Had a ticket or a place, and gave it up.
    Cancelled,
}

/// A page of the waiting list: users with their 1-based positions, in queue order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingPage {
    pub entries: Vec<(Arc<str>, u64)>,
    /// Where the next page starts; `None` on the last one.
    pub next: Option<PageCursor>,
}

/// The last entry of a waiting-list page, which the next page starts after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// Its 1-based position then.
    pub position: u64,
    /// The `EventState` it was read from, and its sequence number there.
    pub epoch: u64,
    pub seq: u64,
    pub user: Arc<str>,
}

/// The counts the event status endpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total_tickets: u32,
    pub booked_tickets: u32,
    pub waiting: usize,
}

/// Where one user stands; one map probe answers duplicates and lookups.
#[derive(Debug, Clone, Copy)]
enum Seat {
    Booked,
    /// Waiting with this sequence number in the [`WaitingList`].
    Waiting(u64),
    Cancelled,
}

/// Tickets, holders and the waiting list of one event.
#[derive(Debug)]
pub struct EventState {
    total_tickets: u32,
    /// Users holding a ticket; never more than `total_tickets`.
    booked: u32,
    /// Every user ever seen at this event, so a cancelled user still has a status.
    users: HashMap<Arc<str>, Seat, foldhash::fast::RandomState>,
    waiting: WaitingList,
    /// Tells this state's waiting-list entries from those of an earlier
    /// reading of the event (their sequence numbers start again at 0), so
    /// that a page cursor names an entry exactly while the state lives.
    epoch: u64,
}

impl EventState {
    pub fn new(total_tickets: u32) -> Self {
        EventState {
            total_tickets,
            booked: 0,
            users: HashMap::default(),
            waiting: WaitingList::default(),
            // Below 10^18: 18 digits in a cursor, as the API documents.
            epoch: RandomState::new().hash_one(0u8) % 1_000_000_000_000_000_000,
        }
    }

    /// Rebuilds the state that storage holds. `waiting` must be in queue order.
    pub fn restore(
        total_tickets: u32,
        booked: impl IntoIterator<Item = Arc<str>>,
        waiting: impl IntoIterator<Item = Arc<str>>,
        cancelled: impl IntoIterator<Item = Arc<str>>,
    ) -> Self {
        let (booked, waiting, cancelled) = (
            booked.into_iter(),
            waiting.into_iter().collect::<Vec<_>>(),
            cancelled.into_iter(),
        );
        let mut state = EventState::new(total_tickets);
        // Sized once: a map grown by doubling hashes every user again at each step.
        state
            .users
            .reserve(booked.size_hint().0 + waiting.len() + cancelled.size_hint().0);
        for user in cancelled {
            state.users.insert(user, Seat::Cancelled);
        }
        for user in booked {
            state.users.insert(user, Seat::Booked);
            state.booked += 1;
        }
        for (seq, user) in (0..).zip(&waiting) {
            state.users.insert(user.clone(), Seat::Waiting(seq));
        }
        state.waiting = WaitingList::from_users(waiting);
        state
    }

    /// Gives `user` a ticket, or a place at the back of the waiting list when sold out.
    pub fn book(&mut self, user: &Arc<str>) -> Result<(BookOutcome, OrderUpdate), Refusal> {
        match self.users.get(user) {
            Some(Seat::Booked) => return Err(Refusal::AlreadyBooked),
            Some(Seat::Waiting(_)) => return Err(Refusal::AlreadyWaiting),
            Some(Seat::Cancelled) | None => {}
        }
        // The queue only ever holds users while every ticket is taken.
        if self.booked < self.total_tickets {
            self.booked += 1;
            self.users.insert(user.clone(), Seat::Booked);
            Ok((BookOutcome::Booked, OrderUpdate::Booked(user.clone())))
        } else {
            let seq = self.waiting.push(user.clone());
            self.users.insert(user.clone(), Seat::Waiting(seq));
            let position = self.waiting.len() as u64;
            Ok((
                BookOutcome::Waiting { position },
                OrderUpdate::Waiting(user.clone()),
            ))
        }
    }

    /// Gives up `user`'s ticket (to the head of the queue, if anyone waits) or waiting place.
    pub fn cancel(&mut self, user: &str) -> Result<(CancelOutcome, OrderUpdate), Refusal> {
        let (key, seat) = self
            .users
            .get_key_value(user)
            .ok_or(Refusal::BookingNotFound)?;
        let (key, seat) = (key.clone(), *seat);
        match seat {
            Seat::Cancelled => return Err(Refusal::BookingNotFound),
            Seat::Waiting(seq) => self.waiting.remove(seq),
            Seat::Booked => {}
        }
        self.users.insert(key.clone(), Seat::Cancelled);
        if let Seat::Booked = seat {
            if let Some(promoted) = self.waiting.pop_front() {
                self.users.insert(promoted.clone(), Seat::Booked);
                let update = OrderUpdate::Reassigned {
                    cancelled: key,
                    promoted: promoted.clone(),
                };
                return Ok((CancelOutcome::Reassigned { to: promoted }, update));
            }
            self.booked -= 1;
            return Ok((CancelOutcome::Cancelled, OrderUpdate::Cancelled(key)));
        }
        Ok((CancelOutcome::Cancelled, OrderUpdate::LeftWaitingList(key)))
    }

    /// `None` for a user never seen at this event.
    pub fn standing(&self, user: &str) -> Option<Standing> {
        Some(match self.users.get(user)? {
            Seat::Booked => Standing::Booked,
            Seat::Waiting(seq) => Standing::Waiting {
                position: self.waiting.position(*seq),
            },
            Seat::Cancelled => Standing::Cancelled,
        })
    }

    /// Up to `limit` users of the waiting list, in queue order, with their
    /// positions, and where the next page starts. A page starts right after
    /// the entry its cursor names, even if that user has left the queue
    /// since; if the event was read again from the database meanwhile, after
    /// that user if still waiting, else at the place they had (everyone
    /// behind them moved up one when they left).
    pub fn waiting_page(&self, after: Option<&PageCursor>, limit: usize) -> WaitingPage {
        let start = match after {
            None => Some(0),
            Some(cursor) if cursor.epoch == self.epoch => cursor.seq.checked_add(1),
            Some(cursor) => match self.users.get(&*cursor.user) {
                Some(Seat::Waiting(seq)) => Some(seq + 1),
                _ => self.waiting.seq_at(cursor.position.max(1)),
            },
        };
        let mut entries: Vec<(u64, Arc<str>)> = start
            .map(|seq| {
                self.waiting
                    .from_seq(seq)
                    .take(limit + 1)
                    .map(|(seq, user)| (seq, user.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let first = entries
            .first()
            .map_or(1, |(seq, _)| self.waiting.position(*seq));
        let next = entries
            .last()
            .filter(|_| more)
            .map(|(seq, user)| PageCursor {
                position: first + entries.len() as u64 - 1,
                epoch: self.epoch,
                seq: *seq,
                user: user.clone(),
            });
        let entries = entries
            .into_iter()
            .zip(first..)
            .map(|((_, user), position)| (user, position))
            .collect();
        WaitingPage { entries, next }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            total_tickets: self.total_tickets,
            booked_tickets: self.booked,
            waiting: self.waiting.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn book(state: &mut EventState, name: &str) -> Result<BookOutcome, Refusal> {
        state.book(&user(name)).map(|(outcome, _)| outcome)
    }

    #[test]
    fn sells_every_ticket_then_queues_in_order() {
        let mut state = EventState::new(2);
        assert_eq!(book(&mut state, "a"), Ok(BookOutcome::Booked));
        assert_eq!(book(&mut state, "b"), Ok(BookOutcome::Booked));
        assert_eq!(
            book(&mut state, "c"),
            Ok(BookOutcome::Waiting { position: 1 })
        );
        assert_eq!(
            book(&mut state, "d"),
            Ok(BookOutcome::Waiting { position: 2 })
        );
        assert_eq!(
            state.summary(),
            Summary {
                total_tickets: 2,
                booked_tickets: 2,
                waiting: 2
            }
        );
    }

    #[test]
    fn refuses_a_second_booking_or_place() {
        let mut state = EventState::new(1);
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        assert_eq!(book(&mut state, "a"), Err(Refusal::AlreadyBooked));
        assert_eq!(book(&mut state, "b"), Err(Refusal::AlreadyWaiting));
    }

    #[test]
    fn cancelling_a_ticket_promotes_the_head_of_the_queue() {
        let mut state = EventState::new(1);
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        book(&mut state, "c").unwrap();
        let (outcome, update) = state.cancel("a").unwrap();
        assert_eq!(outcome, CancelOutcome::Reassigned { to: user("b") });
        assert_eq!(
            update,
            OrderUpdate::Reassigned {
                cancelled: user("a"),
                promoted: user("b")
            }
        );
        assert_eq!(state.standing("b"), Some(Standing::Booked));
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        assert_eq!(state.standing("a"), Some(Standing::Cancelled));
        assert_eq!(
            state.summary(),
            Summary {
                total_tickets: 1,
                booked_tickets: 1,
                waiting: 1
            }
        );
    }

    #[test]
    fn cancelling_with_nobody_waiting_puts_the_ticket_back_on_sale() {
        let mut state = EventState::new(1);
        book(&mut state, "a").unwrap();
        assert_eq!(
            state.cancel("a").unwrap(),
            (CancelOutcome::Cancelled, OrderUpdate::Cancelled(user("a")))
        );
        assert_eq!(state.summary().booked_tickets, 0);
        assert_eq!(book(&mut state, "b"), Ok(BookOutcome::Booked));
    }

    #[test]
    fn leaving_the_queue_moves_the_rest_up() {
        let mut state = EventState::new(1);
        for name in ["a", "b", "c", "d"] {
            book(&mut state, name).unwrap();
        }
        let (outcome, update) = state.cancel("c").unwrap();
        assert_eq!(
            (outcome, update),
            (
                CancelOutcome::Cancelled,
                OrderUpdate::LeftWaitingList(user("c"))
            )
        );
        assert_eq!(state.standing("d"), Some(Standing::Waiting { position: 2 }));
        assert_eq!(state.summary().waiting, 2);
    }

    #[test]
    fn unknown_or_cancelled_users_have_no_booking_to_cancel() {
        let mut state = EventState::new(1);
        assert_eq!(state.cancel("nobody"), Err(Refusal::BookingNotFound));
        book(&mut state, "a").unwrap();
        state.cancel("a").unwrap();
        assert_eq!(state.cancel("a"), Err(Refusal::BookingNotFound));
        assert_eq!(state.standing("nobody"), None);
    }

    #[test]
    fn a_cancelled_user_may_book_again_at_the_back() {
        let mut state = EventState::new(1);
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        book(&mut state, "c").unwrap();
        state.cancel("b").unwrap();
        assert_eq!(
            book(&mut state, "b"),
            Ok(BookOutcome::Waiting { position: 2 })
        );
    }

    #[test]
    fn restore_rebuilds_the_same_queue() {
        let state = EventState::restore(1, [user("a")], [user("c"), user("b")], [user("z")]);
        assert_eq!(
            state.summary(),
            Summary {
                total_tickets: 1,
                booked_tickets: 1,
                waiting: 2
            }
        );
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        assert_eq!(state.standing("b"), Some(Standing::Waiting { position: 2 }));
        assert_eq!(state.standing("z"), Some(Standing::Cancelled));
    }

    #[test]
    fn waiting_list_pages_go_on_after_their_last_entry_across_a_new_reading() {
        let user = |n: u32| Arc::<str>::from(format!("u{n}"));
        let mut state = EventState::new(1);
        for n in 0..8 {
            state.book(&user(n)).unwrap();
        }
        // u1..u7 wait.
        let first = state.waiting_page(None, 3);
        let names = |page: &WaitingPage| {
            page.entries
                .iter()
                .map(|(user, position)| (user.to_string(), *position))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&first),
            [("u1".into(), 1), ("u2".into(), 2), ("u3".into(), 3)]
        );
        let cursor = first.next.clone().expect("more");
        // The last user of the page leaves: the next page still starts after it.
        state.cancel("u3").unwrap();
        let second = state.waiting_page(Some(&cursor), 3);
        assert_eq!(
            names(&second),
            [("u4".into(), 3), ("u5".into(), 4), ("u6".into(), 5)]
        );
        // The event read again (another epoch): after the cursor's user if
        // still waiting, else after the place it had.
        let cursor = second.next.clone().expect("more");
        let reread = EventState::restore(1, [user(0)], (1..8).filter(|n| *n != 3).map(user), []);
        assert_eq!(
            names(&reread.waiting_page(Some(&cursor), 3)),
            [("u7".into(), 6)]
        );
        // The cursor's user u6 leaves too, and the event is read again: the
        // page starts at the place u6 had, where u7 moved up to.
        let without_u6 = EventState::restore(1, [user(0)], [1, 2, 4, 5, 7].map(user), []);
        assert_eq!(
            names(&without_u6.waiting_page(Some(&cursor), 3)),
            [("u7".into(), 5)]
        );
        // A cursor no client could have been given ends nothing.
        let foreign = PageCursor {
            position: u64::MAX,
            epoch: cursor.epoch,
            seq: u64::MAX,
            user: user(99),
        };
        assert!(without_u6
            .waiting_page(Some(&foreign), 3)
            .entries
            .is_empty());
    }
}
