//! The booking rules of one event, as plain data: no actors, no I/O.
//!
//! [`EventState`] decides every book, hold, cancel and change of settings
//! synchronously and says what changed as an [`OrderUpdate`] (or, for
//! settings, the [`Promotion`]s they caused), which the event actor hands to
//! storage. The same state is rebuilt from storage when the event is
//! activated and after a failed commit. Time comes in from outside (the
//! actor reads the clock), so every rule here is exact and testable.
//!
//! Whatever frees a ticket (a cancel, a release, a lapse, more capacity)
//! gives it to the head of the waiting list at once, booked or offered as
//! the event's [`WaitingListMode`] says, so that no ticket sits free while
//! someone waits, sales open or not.

mod clock;
mod restore;
mod waiting_list;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

use crate::ids::UserKey;

pub use clock::UtcMillis;
pub use restore::{LoggedSeat, Overbooked, Restoring};
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

/// What a successful hold gave the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// A ticket is set aside for the user until `expires_at`.
    Held { expires_at: UtcMillis },
    /// No ticket free (each is booked or held): the user joined the waiting
    /// list at this 1-based place, as a booking would.
    Waiting { position: u64 },
}

/// What a successful cancellation (or release of a hold) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The user's ticket went back on sale, or the user left the waiting list.
    Cancelled,
    /// The user's ticket went to the head of the waiting list, this user.
    Reassigned { to: UserKey },
    /// The user's ticket is offered to the head of the waiting list, this
    /// user (an event in `offer` mode).
    Offered { to: UserKey },
}

/// Why a request was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An initialize for an event that exists (or is being created).
    AlreadyInitialized,
    AlreadyBooked,
    AlreadyWaiting,
    /// The user holds a ticket already: one hold per user, and no booking beside it.
    AlreadyHolding,
    BookingNotFound,
    /// No live hold to confirm or release: never held, released, or lapsed.
    HoldNotFound,
    /// Sales are closed: no new booking, hold or place in the queue.
    SalesClosed,
    /// A capacity below the tickets booked and held.
    CapacityBelowTaken,
}

/// How an event's waiting list gets a freed ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingListMode {
    /// The head of the queue is booked at once (the default).
    Assign,
    /// The head of the queue is offered the ticket: a hold for `offer_secs`
    /// seconds, which it confirms like any hold.
    Offer { offer_secs: u32 },
}

/// What an event is set up with, at its creation and by later changes
/// ([`EventState::configure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    pub total_tickets: u32,
    /// New bookings, holds and places in the queue are taken.
    pub sales_open: bool,
    pub waiting_list: WaitingListMode,
    /// A hold's duration in seconds when its request names none; `None`:
    /// the server's `hold_secs`.
    pub hold_secs: Option<u32>,
}

impl EventSettings {
    /// The settings of an event created with only its tickets: sales open,
    /// the queue's head booked at once, the server's hold duration.
    pub fn new(total_tickets: u32) -> Self {
        EventSettings {
            total_tickets,
            sales_open: true,
            waiting_list: WaitingListMode::Assign,
            hold_secs: None,
        }
    }
}

/// A change of an event's settings: each `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub total_tickets: Option<u32>,
    pub sales_open: Option<bool>,
    pub waiting_list: Option<WaitingListMode>,
    pub hold_secs: Option<u32>,
}

/// Where a freed ticket went: to the head of the queue, booked at once or
/// offered until `expires_at` (per the event's waiting-list mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    Booked(UserKey),
    Offered {
        user: UserKey,
        expires_at: UtcMillis,
    },
}

impl Promotion {
    pub fn user(&self) -> &UserKey {
        match self {
            Promotion::Booked(user) | Promotion::Offered { user, .. } => user,
        }
    }

    /// What it changes in the event's counts: the user leaves the queue
    /// with a ticket, booked or held.
    pub fn counts(&self) -> CountsMoved {
        let (booked, held) = match self {
            Promotion::Booked(_) => (1, 0),
            Promotion::Offered { .. } => (0, 1),
        };
        CountsMoved {
            booked,
            held,
            waiting: -1,
        }
    }
}

/// One decided change to the stored orders, in the order it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderUpdate {
    Booked(UserKey),
    Waiting(UserKey),
    /// A ticket set aside for `user` until `expires_at`.
    Held {
        user: UserKey,
        expires_at: UtcMillis,
    },
    /// A hold (or an offer) became a booking.
    Confirmed(UserKey),
    /// `user` gave up a ticket: it went to `promoted`, the head of the
    /// queue, if anyone waited (one step, two rows), else back on sale.
    Cancelled {
        user: UserKey,
        promoted: Option<Promotion>,
    },
    /// A waiting user gave up the place.
    LeftWaitingList(UserKey),
    /// `user`'s hold ended: given up (`lapsed` is `None`), or lapsed at
    /// its expiry, `lapsed`. Its ticket went to `promoted`, as a cancelled
    /// one does.
    HoldEnded {
        user: UserKey,
        lapsed: Option<UtcMillis>,
        promoted: Option<Promotion>,
    },
}

/// How a change moves an event's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsMoved {
    pub booked: i64,
    pub held: i64,
    pub waiting: i64,
}

impl CountsMoved {
    /// `self`, then `other`.
    pub fn and(self, other: CountsMoved) -> CountsMoved {
        CountsMoved {
            booked: self.booked + other.booked,
            held: self.held + other.held,
            waiting: self.waiting + other.waiting,
        }
    }
}

impl OrderUpdate {
    /// What it changes in the event's counts.
    pub fn counts(&self) -> CountsMoved {
        let (booked, held, waiting) = match self {
            OrderUpdate::Booked(_) => (1, 0, 0),
            OrderUpdate::Waiting(_) => (0, 0, 1),
            OrderUpdate::Held { .. } => (0, 1, 0),
            OrderUpdate::Confirmed(_) => (1, -1, 0),
            OrderUpdate::Cancelled { .. } => (-1, 0, 0),
            OrderUpdate::LeftWaitingList(_) => (0, 0, -1),
            OrderUpdate::HoldEnded { .. } => (0, -1, 0),
        };
        let promoted = match self {
            OrderUpdate::Cancelled { promoted, .. } | OrderUpdate::HoldEnded { promoted, .. } => {
                promoted.as_ref().map(Promotion::counts)
            }
            _ => None,
        };
        let own = CountsMoved {
            booked,
            held,
            waiting,
        };
        own.and(promoted.unwrap_or_default())
    }

    /// Rows of the order log this update replaces for good: each user's
    /// row before (a booked, waiting or held one). A booking or hold
    /// replaces the row of a user who cancelled before, if there is one:
    /// not counted here, and never more than the cancellations.
    pub fn rows_replaced(&self) -> u64 {
        match self {
            OrderUpdate::Booked(_) | OrderUpdate::Waiting(_) | OrderUpdate::Held { .. } => 0,
            OrderUpdate::Confirmed(_) | OrderUpdate::LeftWaitingList(_) => 1,
            OrderUpdate::Cancelled { promoted, .. } | OrderUpdate::HoldEnded { promoted, .. } => {
                1 + u64::from(promoted.is_some())
            }
        }
    }
}

/// A user's standing at an event, as the status endpoint reports it: on the
/// wire, `{"status": "booked"}`, `{"status": "waiting", "position": 2}`,
/// `{"status": "held", "expiresAt": "..."}` (with `"offered": true` for an
/// offer from the queue), `{"status": "cancelled"}` or
/// `{"status": "expired", "expiredAt": "..."}` (instants in RFC 3339, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Standing {
    Booked,
    Waiting {
        /// 1-based place in the waiting list.
        #[schema(minimum = 1)]
        position: u64,
    },
    /// A ticket is set aside for the user until `expiresAt`, unless confirmed before.
    Held {
        #[serde(rename = "expiresAt")]
        #[schema(value_type = String, format = DateTime)]
        expires_at: UtcMillis,
        /// `true` when the ticket was offered from the waiting list; absent otherwise.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        offered: bool,
    },
    /// Had a ticket, a hold or a place, and gave it up.
    Cancelled,
    /// Held a ticket (or was offered one), and did not confirm it by `expiredAt`.
    Expired {
        #[serde(rename = "expiredAt")]
        #[schema(value_type = String, format = DateTime)]
        expired_at: UtcMillis,
    },
}

/// A page of the waiting list: users with their 1-based positions, in queue order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingPage {
    pub entries: Vec<(UserKey, u64)>,
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
    pub user: UserKey,
}

/// An event's settings and counts, as its status reports them, and the
/// version they are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Grows by one with every change of the event (see `EventState::bump_version`).
    pub version: u64,
    pub settings: EventSettings,
    pub booked_tickets: u32,
    pub held_tickets: u32,
    pub waiting: usize,
}

/// Where a live hold sits in the order of lapses: its expiry, then the
/// order holds were taken in, so that holds of one expiry lapse first come,
/// first served.
type LapseKey = (UtcMillis, u64);

/// Where one user stands; one map probe answers duplicates and lookups.
#[derive(Debug, Clone, Copy)]
enum Seat {
    Booked,
    /// Waiting with this sequence number in the [`WaitingList`].
    Waiting(u64),
    /// Holds a ticket (its expiry in `EventState::holds`); `offered` from the queue.
    Held {
        offered: bool,
    },
    Cancelled,
    /// A hold that lapsed then.
    Expired(UtcMillis),
}

/// Tickets, holders and the waiting list of one event.
#[derive(Debug)]
pub struct EventState {
    settings: EventSettings,
    /// Users with a ticket; with `held`, never more than `total_tickets`.
    booked: u32,
    /// Tickets set aside by live holds and offers.
    held: u32,
    /// Every user ever seen at this event, so a cancelled user still has a
    /// status. hashbrown's own map (std's is built on it) for `entry_ref`,
    /// which builds the key of a new user only (see `Restoring`).
    users: hashbrown::HashMap<UserKey, Seat, foldhash::fast::RandomState>,
    waiting: WaitingList,
    /// The live holds in the order they lapse: what lapses next first.
    expiries: BTreeMap<LapseKey, UserKey>,
    /// Each live hold's place in `expiries`, by user: apart from `users`,
    /// so that every user's seat stays 16 bytes (a million users at an event).
    holds: HashMap<UserKey, LapseKey, foldhash::fast::RandomState>,
    /// Holds taken so far: the tie-break of [`LapseKey`].
    holds_taken: u64,
    /// Tells this state's waiting-list entries from those of an earlier
    /// reading of the event (their sequence numbers start again at 0), so
    /// that a page cursor names an entry exactly while the state lives.
    epoch: u64,
    /// The changes decided since the event was created: the version its
    /// status streams carry (`id:`), stored with its counts.
    version: u64,
}

impl EventState {
    pub fn new(settings: EventSettings) -> Self {
        EventState {
            settings,
            booked: 0,
            held: 0,
            users: hashbrown::HashMap::default(),
            waiting: WaitingList::default(),
            expiries: BTreeMap::new(),
            holds: HashMap::default(),
            holds_taken: 0,
            // Below 10^18: 18 digits in a cursor, as the API documents.
            epoch: RandomState::new().hash_one(0u8) % 1_000_000_000_000_000_000,
            version: 0,
        }
    }

    /// The state, at the version storage holds.
    pub fn at_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// One more change was decided: the actor calls it for each change it
    /// hands to storage, whose commit moves the stored version alike.
    pub fn bump_version(&mut self) {
        self.version += 1;
    }

    /// The event's settings now.
    pub fn settings(&self) -> EventSettings {
        self.settings
    }

    /// Refuses a user who has a ticket, a hold or a place already.
    fn refuse_if_taken(&self, user: &str) -> Result<(), Refusal> {
        match self.users.get(user) {
            Some(Seat::Booked) => Err(Refusal::AlreadyBooked),
            Some(Seat::Waiting(_)) => Err(Refusal::AlreadyWaiting),
            Some(Seat::Held { .. }) => Err(Refusal::AlreadyHolding),
            Some(Seat::Cancelled | Seat::Expired(_)) | None => Ok(()),
        }
    }

    /// What a new booking or hold needs besides a free user: open sales.
    fn refuse_new(&self, user: &str) -> Result<(), Refusal> {
        self.refuse_if_taken(user)?;
        match self.settings.sales_open {
            true => Ok(()),
            false => Err(Refusal::SalesClosed),
        }
    }

    /// A ticket that is neither booked nor held. The queue only ever holds
    /// users while there is none.
    fn has_free_ticket(&self) -> bool {
        self.booked + self.held < self.settings.total_tickets
    }

    /// Puts `user` at the back of the queue; returns the 1-based place.
    fn join_queue(&mut self, user: &UserKey) -> u64 {
        let seq = self.waiting.push(user.clone());
        self.users.insert(user.clone(), Seat::Waiting(seq));
        self.waiting.len() as u64
    }

    fn set_held(&mut self, user: UserKey, expires_at: UtcMillis, offered: bool) {
        let lapses = (expires_at, self.holds_taken);
        self.holds_taken += 1;
        self.held += 1;
        self.expiries.insert(lapses, user.clone());
        self.holds.insert(user.clone(), lapses);
        self.users.insert(user, Seat::Held { offered });
    }

    /// Gives a free ticket to the head of the queue, if anyone waits: booked,
    /// or offered until `now` plus the offer's time.
    fn promote_head(&mut self, now: UtcMillis) -> Option<Promotion> {
        let user = self.waiting.pop_front()?;
        Some(match self.settings.waiting_list {
            WaitingListMode::Assign => {
                self.users.insert(user.clone(), Seat::Booked);
                self.booked += 1;
                Promotion::Booked(user)
            }
            WaitingListMode::Offer { offer_secs } => {
                let expires_at = now.plus_secs(offer_secs);
                self.set_held(user.clone(), expires_at, true);
                Promotion::Offered { user, expires_at }
            }
        })
    }

    /// Gives `user` a ticket, or a place at the back of the waiting list when sold out.
    pub fn book(&mut self, user: &UserKey) -> Result<(BookOutcome, OrderUpdate), Refusal> {
        self.refuse_new(user)?;
        if self.has_free_ticket() {
            self.booked += 1;
            self.users.insert(user.clone(), Seat::Booked);
            return Ok((BookOutcome::Booked, OrderUpdate::Booked(user.clone())));
        }
        let position = self.join_queue(user);
        Ok((
            BookOutcome::Waiting { position },
            OrderUpdate::Waiting(user.clone()),
        ))
    }

    /// Sets a ticket aside for `user` until `expires_at`, or gives a place
    /// at the back of the waiting list when none is free.
    pub fn hold(
        &mut self,
        user: &UserKey,
        expires_at: UtcMillis,
    ) -> Result<(HoldOutcome, OrderUpdate), Refusal> {
        self.refuse_new(user)?;
        if self.has_free_ticket() {
            self.set_held(user.clone(), expires_at, false);
            let update = OrderUpdate::Held {
                user: user.clone(),
                expires_at,
            };
            return Ok((HoldOutcome::Held { expires_at }, update));
        }
        let position = self.join_queue(user);
        Ok((
            HoldOutcome::Waiting { position },
            OrderUpdate::Waiting(user.clone()),
        ))
    }

    /// `user`'s live hold, with the map's key for the user.
    fn live_hold(&self, user: &str) -> Result<(UserKey, LapseKey), Refusal> {
        match self.users.get_key_value(user) {
            Some((key, Seat::Held { .. })) => Ok((key.clone(), self.holds[key])),
            _ => Err(Refusal::HoldNotFound),
        }
    }

    /// Turns `user`'s live hold (or offer) into a booking, sales open or not.
    pub fn confirm(&mut self, user: &str) -> Result<((), OrderUpdate), Refusal> {
        let (key, lapses) = self.live_hold(user)?;
        self.expiries.remove(&lapses);
        self.holds.remove(&key);
        self.held -= 1;
        self.booked += 1;
        self.users.insert(key.clone(), Seat::Booked);
        Ok(((), OrderUpdate::Confirmed(key)))
    }

    /// Gives up `user`'s live hold; its ticket goes to the head of the
    /// queue, else back on sale.
    pub fn release(
        &mut self,
        user: &str,
        now: UtcMillis,
    ) -> Result<(CancelOutcome, OrderUpdate), Refusal> {
        let (key, lapses) = self.live_hold(user)?;
        Ok(self.end_hold(key, lapses, None, now))
    }

    /// Ends a live hold: released (`lapsed` is `None`) or lapsed then.
    fn end_hold(
        &mut self,
        user: UserKey,
        lapses: LapseKey,
        lapsed: Option<UtcMillis>,
        now: UtcMillis,
    ) -> (CancelOutcome, OrderUpdate) {
        self.expiries.remove(&lapses);
        self.holds.remove(&user);
        self.held -= 1;
        let seat = lapsed.map_or(Seat::Cancelled, Seat::Expired);
        self.users.insert(user.clone(), seat);
        let promoted = self.promote_head(now);
        let outcome = CancelOutcome::of(promoted.as_ref());
        let update = OrderUpdate::HoldEnded {
            user,
            lapsed,
            promoted,
        };
        (outcome, update)
    }

    /// Lapses every hold whose expiry is not after `now`, earliest first
    /// (of one expiry, the first taken first), each as a release would,
    /// but recorded as lapsed at its expiry. An offer its lapse makes
    /// runs from `now`: the next user in the queue gets its whole time, even
    /// after a server that was down.
    pub fn lapse_due(&mut self, now: UtcMillis) -> Vec<OrderUpdate> {
        std::iter::from_fn(|| self.lapse_next(now)).collect()
    }

    /// Lapses the hold that lapses first, if its expiry is not after `now`
    /// (see [`lapse_due`](Self::lapse_due)).
    pub fn lapse_next(&mut self, now: UtcMillis) -> Option<OrderUpdate> {
        let (&lapses, user) = self.expiries.first_key_value()?;
        let expires_at = lapses.0;
        if expires_at > now {
            return None;
        }
        let user = user.clone();
        Some(self.end_hold(user, lapses, Some(expires_at), now).1)
    }

    /// When the earliest live hold lapses, if there is one.
    pub fn next_expiry(&self) -> Option<UtcMillis> {
        self.expiries
            .first_key_value()
            .map(|((expires_at, _), _)| *expires_at)
    }

    /// Gives up `user`'s ticket (to the head of the queue, if anyone
    /// waits), hold (likewise) or waiting place.
    pub fn cancel(
        &mut self,
        user: &str,
        now: UtcMillis,
    ) -> Result<(CancelOutcome, OrderUpdate), Refusal> {
        let (key, seat) = self
            .users
            .get_key_value(user)
            .ok_or(Refusal::BookingNotFound)?;
        let (key, seat) = (key.clone(), *seat);
        match seat {
            Seat::Cancelled | Seat::Expired(_) => Err(Refusal::BookingNotFound),
            Seat::Held { .. } => {
                let lapses = self.holds[&key];
                Ok(self.end_hold(key, lapses, None, now))
            }
            Seat::Waiting(seq) => {
                self.waiting.remove(seq);
                self.users.insert(key.clone(), Seat::Cancelled);
                Ok((CancelOutcome::Cancelled, OrderUpdate::LeftWaitingList(key)))
            }
            Seat::Booked => {
                self.users.insert(key.clone(), Seat::Cancelled);
                self.booked -= 1;
                let promoted = self.promote_head(now);
                let outcome = CancelOutcome::of(promoted.as_ref());
                Ok((
                    outcome,
                    OrderUpdate::Cancelled {
                        user: key,
                        promoted,
                    },
                ))
            }
        }
    }

    /// Changes the event's settings; more tickets go to the head of the
    /// queue at once (booked or offered, per the mode then), in queue
    /// order. Refuses a capacity below the tickets booked and held, and
    /// changes nothing then.
    pub fn configure(
        &mut self,
        patch: SettingsPatch,
        now: UtcMillis,
    ) -> Result<(EventSettings, Vec<Promotion>), Refusal> {
        let SettingsPatch {
            total_tickets,
            sales_open,
            waiting_list,
            hold_secs,
        } = patch;
        if let Some(total) = total_tickets {
            if total < self.booked + self.held {
                return Err(Refusal::CapacityBelowTaken);
            }
            self.settings.total_tickets = total;
        }
        if let Some(open) = sales_open {
            self.settings.sales_open = open;
        }
        if let Some(mode) = waiting_list {
            self.settings.waiting_list = mode;
        }
        if let Some(secs) = hold_secs {
            self.settings.hold_secs = Some(secs);
        }
        let mut promoted = Vec::new();
        while self.has_free_ticket() {
            match self.promote_head(now) {
                Some(promotion) => promoted.push(promotion),
                None => break,
            }
        }
        Ok((self.settings, promoted))
    }

    /// `None` for a user never seen at this event.
    pub fn standing(&self, user: &str) -> Option<Standing> {
        Some(match self.users.get(user)? {
            Seat::Booked => Standing::Booked,
            Seat::Waiting(seq) => Standing::Waiting {
                position: self.waiting.position(*seq),
            },
            Seat::Held { offered } => Standing::Held {
                expires_at: self.holds.get(user)?.0,
                offered: *offered,
            },
            Seat::Cancelled => Standing::Cancelled,
            Seat::Expired(expired_at) => Standing::Expired {
                expired_at: *expired_at,
            },
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
        let mut entries: Vec<(u64, UserKey)> = start
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
            version: self.version,
            settings: self.settings,
            booked_tickets: self.booked,
            held_tickets: self.held,
            waiting: self.waiting.len(),
        }
    }
}

impl CancelOutcome {
    /// The answer of a cancel whose freed ticket went to `promoted`.
    fn of(promoted: Option<&Promotion>) -> Self {
        match promoted {
            None => CancelOutcome::Cancelled,
            Some(Promotion::Booked(to)) => CancelOutcome::Reassigned { to: to.clone() },
            Some(Promotion::Offered { user, .. }) => CancelOutcome::Offered { to: user.clone() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock of the tests that do not care what time it is.
    const NOW: UtcMillis = UtcMillis(0);

    fn user(name: &str) -> UserKey {
        UserKey::from(name)
    }

    fn book(state: &mut EventState, name: &str) -> Result<BookOutcome, Refusal> {
        state.book(&user(name)).map(|(outcome, _)| outcome)
    }

    #[test]
    fn sells_every_ticket_then_queues_in_order() {
        let mut state = EventState::new(EventSettings::new(2));
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
                version: 0,
                settings: EventSettings::new(2),
                booked_tickets: 2,
                held_tickets: 0,
                waiting: 2
            }
        );
    }

    #[test]
    fn refuses_a_second_booking_or_place() {
        let mut state = EventState::new(EventSettings::new(1));
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        assert_eq!(book(&mut state, "a"), Err(Refusal::AlreadyBooked));
        assert_eq!(book(&mut state, "b"), Err(Refusal::AlreadyWaiting));
    }

    #[test]
    fn cancelling_a_ticket_promotes_the_head_of_the_queue() {
        let mut state = EventState::new(EventSettings::new(1));
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        book(&mut state, "c").unwrap();
        let (outcome, update) = state.cancel("a", NOW).unwrap();
        assert_eq!(outcome, CancelOutcome::Reassigned { to: user("b") });
        assert_eq!(
            update,
            OrderUpdate::Cancelled {
                user: user("a"),
                promoted: Some(Promotion::Booked(user("b")))
            }
        );
        assert_eq!(state.standing("b"), Some(Standing::Booked));
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        assert_eq!(state.standing("a"), Some(Standing::Cancelled));
        assert_eq!(
            state.summary(),
            Summary {
                version: 0,
                settings: EventSettings::new(1),
                booked_tickets: 1,
                held_tickets: 0,
                waiting: 1
            }
        );
    }

    #[test]
    fn cancelling_with_nobody_waiting_puts_the_ticket_back_on_sale() {
        let mut state = EventState::new(EventSettings::new(1));
        book(&mut state, "a").unwrap();
        assert_eq!(
            state.cancel("a", NOW).unwrap(),
            (
                CancelOutcome::Cancelled,
                OrderUpdate::Cancelled {
                    user: user("a"),
                    promoted: None
                }
            )
        );
        assert_eq!(state.summary().booked_tickets, 0);
        assert_eq!(book(&mut state, "b"), Ok(BookOutcome::Booked));
    }

    #[test]
    fn leaving_the_queue_moves_the_rest_up() {
        let mut state = EventState::new(EventSettings::new(1));
        for name in ["a", "b", "c", "d"] {
            book(&mut state, name).unwrap();
        }
        let (outcome, update) = state.cancel("c", NOW).unwrap();
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
        let mut state = EventState::new(EventSettings::new(1));
        assert_eq!(state.cancel("nobody", NOW), Err(Refusal::BookingNotFound));
        book(&mut state, "a").unwrap();
        state.cancel("a", NOW).unwrap();
        assert_eq!(state.cancel("a", NOW), Err(Refusal::BookingNotFound));
        assert_eq!(state.standing("nobody"), None);
    }

    #[test]
    fn a_cancelled_user_may_book_again_at_the_back() {
        let mut state = EventState::new(EventSettings::new(1));
        book(&mut state, "a").unwrap();
        book(&mut state, "b").unwrap();
        book(&mut state, "c").unwrap();
        state.cancel("b", NOW).unwrap();
        assert_eq!(
            book(&mut state, "b"),
            Ok(BookOutcome::Waiting { position: 2 })
        );
    }

    #[test]
    fn waiting_list_pages_go_on_after_their_last_entry_across_a_new_reading() {
        let user = |n: u32| UserKey::from(format!("u{n}"));
        let mut state = EventState::new(EventSettings::new(1));
        for n in 0..8 {
            state.book(&user(n)).unwrap();
        }
        // u1..u7 wait.
        // u0 booked, then `waiting` in order, read back from the log.
        let queue_of = |waiting: Vec<UserKey>| {
            let mut restoring = Restoring::new(EventSettings::new(1), 0, 0);
            for waiting in waiting.iter().rev() {
                restoring.row(waiting, LoggedSeat::Waiting);
            }
            restoring.row(&user(0), LoggedSeat::Booked);
            restoring.finish().expect("one booked of one")
        };
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
        state.cancel("u3", NOW).unwrap();
        let second = state.waiting_page(Some(&cursor), 3);
        assert_eq!(
            names(&second),
            [("u4".into(), 3), ("u5".into(), 4), ("u6".into(), 5)]
        );
        // The event read again (another epoch): after the cursor's user if
        // still waiting, else after the place it had.
        let cursor = second.next.clone().expect("more");
        let reread = queue_of((1..8).filter(|n| *n != 3).map(user).collect());
        assert_eq!(
            names(&reread.waiting_page(Some(&cursor), 3)),
            [("u7".into(), 6)]
        );
        // The cursor's user u6 leaves too, and the event is read again: the
        // page starts at the place u6 had, where u7 moved up to.
        let without_u6 = queue_of([1, 2, 4, 5, 7].map(user).to_vec());
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

    fn held(state: &mut EventState, name: &str, expires_at: i64) -> Result<HoldOutcome, Refusal> {
        state
            .hold(&user(name), UtcMillis(expires_at))
            .map(|(outcome, _)| outcome)
    }

    #[test]
    fn a_hold_takes_a_ticket_until_confirmed_or_released() {
        let mut state = EventState::new(EventSettings::new(2));
        assert_eq!(
            held(&mut state, "a", 1000),
            Ok(HoldOutcome::Held {
                expires_at: UtcMillis(1000)
            })
        );
        book(&mut state, "b").unwrap();
        // Both tickets are taken: a third user waits, for a hold as for a booking.
        assert_eq!(
            held(&mut state, "c", 1000),
            Ok(HoldOutcome::Waiting { position: 1 })
        );
        let summary = state.summary();
        assert_eq!((summary.booked_tickets, summary.held_tickets), (1, 1));
        assert_eq!(
            state.standing("a"),
            Some(Standing::Held {
                expires_at: UtcMillis(1000),
                offered: false,
            })
        );
        assert_eq!(
            state.confirm("a"),
            Ok(((), OrderUpdate::Confirmed(user("a"))))
        );
        assert_eq!(state.standing("a"), Some(Standing::Booked));
        assert_eq!(state.confirm("a"), Err(Refusal::HoldNotFound));
        assert_eq!(state.release("b", NOW), Err(Refusal::HoldNotFound));
        assert_eq!(state.next_expiry(), None, "a confirmed hold lapses no more");
    }

    #[test]
    fn one_hold_per_user_and_no_booking_beside_it() {
        let mut state = EventState::new(EventSettings::new(3));
        held(&mut state, "a", 1000).unwrap();
        assert_eq!(held(&mut state, "a", 2000), Err(Refusal::AlreadyHolding));
        assert_eq!(book(&mut state, "a"), Err(Refusal::AlreadyHolding));
        book(&mut state, "b").unwrap();
        assert_eq!(held(&mut state, "b", 1000), Err(Refusal::AlreadyBooked));
    }

    #[test]
    fn a_released_hold_goes_to_the_head_of_the_queue() {
        let mut state = EventState::new(EventSettings::new(1));
        held(&mut state, "a", 1000).unwrap();
        book(&mut state, "b").unwrap();
        book(&mut state, "c").unwrap();
        let (outcome, update) = state.release("a", NOW).unwrap();
        assert_eq!(outcome, CancelOutcome::Reassigned { to: user("b") });
        assert_eq!(
            update,
            OrderUpdate::HoldEnded {
                user: user("a"),
                lapsed: None,
                promoted: Some(Promotion::Booked(user("b")))
            }
        );
        assert_eq!(
            update.counts(),
            CountsMoved {
                booked: 1,
                held: -1,
                waiting: -1
            },
            "a's hold ends, b books, the queue is one shorter"
        );
        assert_eq!(state.standing("a"), Some(Standing::Cancelled));
        assert_eq!(state.standing("b"), Some(Standing::Booked));
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        // A cancel of a held user releases it too.
        let mut state = EventState::new(EventSettings::new(1));
        held(&mut state, "a", 1000).unwrap();
        assert_eq!(state.cancel("a", NOW).unwrap().0, CancelOutcome::Cancelled);
        assert_eq!(state.summary().held_tickets, 0);
        assert_eq!(book(&mut state, "d"), Ok(BookOutcome::Booked));
    }

    #[test]
    fn holds_lapse_in_order_of_expiry_and_their_tickets_go_to_the_queue() {
        let mut state = EventState::new(EventSettings::new(3));
        held(&mut state, "late", 3000).unwrap();
        held(&mut state, "early", 1000).unwrap();
        held(&mut state, "live", 9000).unwrap();
        book(&mut state, "w1").unwrap();
        assert_eq!(state.next_expiry(), Some(UtcMillis(1000)));
        assert_eq!(state.lapse_due(UtcMillis(999)), []);
        let lapsed = state.lapse_due(UtcMillis(3000));
        assert_eq!(
            lapsed,
            [
                OrderUpdate::HoldEnded {
                    user: user("early"),
                    lapsed: Some(UtcMillis(1000)),
                    promoted: Some(Promotion::Booked(user("w1")))
                },
                OrderUpdate::HoldEnded {
                    user: user("late"),
                    lapsed: Some(UtcMillis(3000)),
                    promoted: None
                },
            ]
        );
        assert_eq!(
            state.standing("early"),
            Some(Standing::Expired {
                expired_at: UtcMillis(1000)
            })
        );
        assert_eq!(state.standing("w1"), Some(Standing::Booked));
        assert_eq!(state.next_expiry(), Some(UtcMillis(9000)));
        let summary = state.summary();
        assert_eq!(
            (
                summary.booked_tickets,
                summary.held_tickets,
                summary.waiting
            ),
            (1, 1, 0)
        );
        // A lapsed user may hold again, and has nothing to cancel or confirm.
        assert_eq!(state.confirm("early"), Err(Refusal::HoldNotFound));
        assert_eq!(state.cancel("early", NOW), Err(Refusal::BookingNotFound));
        assert!(matches!(
            held(&mut state, "early", 5000),
            Ok(HoldOutcome::Held { .. })
        ));
    }

    fn offering(total_tickets: u32, offer_secs: u32) -> EventState {
        EventState::new(EventSettings {
            waiting_list: WaitingListMode::Offer { offer_secs },
            ..EventSettings::new(total_tickets)
        })
    }

    #[test]
    fn in_offer_mode_a_freed_ticket_is_offered_down_the_queue_until_one_confirms() {
        let mut state = offering(1, 60);
        for name in ["a", "b", "c", "d"] {
            book(&mut state, name).unwrap();
        }
        let (outcome, update) = state.cancel("a", UtcMillis(1_000)).unwrap();
        assert_eq!(outcome, CancelOutcome::Offered { to: user("b") });
        let offer_to_b = Promotion::Offered {
            user: user("b"),
            expires_at: UtcMillis(61_000),
        };
        assert_eq!(
            update,
            OrderUpdate::Cancelled {
                user: user("a"),
                promoted: Some(offer_to_b)
            }
        );
        assert_eq!(
            update.counts(),
            CountsMoved {
                booked: -1,
                held: 1,
                waiting: -1
            }
        );
        assert_eq!(
            state.standing("b"),
            Some(Standing::Held {
                expires_at: UtcMillis(61_000),
                offered: true
            })
        );
        assert_eq!(state.standing("c"), Some(Standing::Waiting { position: 1 }));
        // b lets it lapse: c gets the offer, from the lapse on.
        let lapsed = state.lapse_due(UtcMillis(61_500));
        assert_eq!(
            lapsed,
            [OrderUpdate::HoldEnded {
                user: user("b"),
                lapsed: Some(UtcMillis(61_000)),
                promoted: Some(Promotion::Offered {
                    user: user("c"),
                    expires_at: UtcMillis(121_500)
                })
            }]
        );
        // c releases it: d gets it; d confirms.
        assert_eq!(
            state.release("c", UtcMillis(70_000)).unwrap().0,
            CancelOutcome::Offered { to: user("d") }
        );
        assert_eq!(
            state.confirm("d"),
            Ok(((), OrderUpdate::Confirmed(user("d"))))
        );
        let summary = state.summary();
        assert_eq!(
            (
                summary.booked_tickets,
                summary.held_tickets,
                summary.waiting
            ),
            (1, 0, 0)
        );
        // d, who got the ticket from the queue, cancels: nobody waits, and d
        // is not put back in the queue or offered it again.
        assert_eq!(state.cancel("d", NOW).unwrap().0, CancelOutcome::Cancelled);
        assert_eq!(state.standing("d"), Some(Standing::Cancelled));
        assert_eq!(state.next_expiry(), None);
    }

    #[test]
    fn more_capacity_goes_to_the_head_of_the_queue_and_less_than_taken_is_refused() {
        let mut state = EventState::new(EventSettings::new(1));
        for name in ["a", "b", "c", "d"] {
            book(&mut state, name).unwrap();
        }
        let more = SettingsPatch {
            total_tickets: Some(3),
            ..SettingsPatch::default()
        };
        let (settings, promoted) = state.configure(more, NOW).unwrap();
        assert_eq!(settings.total_tickets, 3);
        assert_eq!(
            promoted,
            [Promotion::Booked(user("b")), Promotion::Booked(user("c"))]
        );
        assert_eq!(state.standing("d"), Some(Standing::Waiting { position: 1 }));
        let less = SettingsPatch {
            total_tickets: Some(2),
            sales_open: Some(false),
            ..SettingsPatch::default()
        };
        assert_eq!(state.configure(less, NOW), Err(Refusal::CapacityBelowTaken));
        assert_eq!(state.settings(), settings, "nothing changed");
        // Room beyond the queue: the rest goes on sale.
        let room = SettingsPatch {
            total_tickets: Some(5),
            ..SettingsPatch::default()
        };
        assert_eq!(
            state.configure(room, NOW).unwrap().1,
            [Promotion::Booked(user("d"))]
        );
        assert_eq!(book(&mut state, "e"), Ok(BookOutcome::Booked));
    }

    #[test]
    fn closed_sales_take_nothing_new_but_confirmations_cancels_and_promotions_go_on() {
        let mut state = EventState::new(EventSettings::new(2));
        held(&mut state, "h", 9_000).unwrap();
        book(&mut state, "a").unwrap();
        book(&mut state, "w").unwrap();
        let close = SettingsPatch {
            sales_open: Some(false),
            ..SettingsPatch::default()
        };
        state.configure(close, NOW).unwrap();
        assert_eq!(book(&mut state, "new"), Err(Refusal::SalesClosed));
        assert_eq!(held(&mut state, "new", 9_000), Err(Refusal::SalesClosed));
        assert_eq!(book(&mut state, "a"), Err(Refusal::AlreadyBooked));
        assert_eq!(
            state.confirm("h"),
            Ok(((), OrderUpdate::Confirmed(user("h"))))
        );
        assert_eq!(
            state.cancel("a", NOW).unwrap().0,
            CancelOutcome::Reassigned { to: user("w") }
        );
        let open = SettingsPatch {
            sales_open: Some(true),
            ..SettingsPatch::default()
        };
        state.configure(open, NOW).unwrap();
        assert_eq!(
            book(&mut state, "new"),
            Ok(BookOutcome::Waiting { position: 1 })
        );
    }

    #[test]
    fn a_users_seat_stays_small() {
        // 16 bytes of a million users' map entries: the memory per user.
        assert_eq!(std::mem::size_of::<Seat>(), 16);
    }

    #[test]
    fn holds_of_one_expiry_lapse_in_the_order_they_were_taken() {
        let mut state = EventState::new(EventSettings::new(2));
        held(&mut state, "zed", 1000).unwrap();
        held(&mut state, "amy", 1000).unwrap();
        book(&mut state, "w").unwrap();
        let lapsed = state.lapse_due(UtcMillis(1000));
        assert_eq!(
            lapsed[0],
            OrderUpdate::HoldEnded {
                user: user("zed"),
                lapsed: Some(UtcMillis(1000)),
                promoted: Some(Promotion::Booked(user("w")))
            },
            "zed held first: its ticket goes to the queue's head"
        );
    }
}
