//! What each connection sends next, shared by all load threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::api::Outcome;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One hot event: every user books it at once (a ticket release).
    Drop,
    /// Bookings spread uniformly over many events.
    Spread,
    /// A hot event where booked users cancel while others book, so the
    /// waiting list is promoted all the time.
    Churn,
    /// A hot event sold through holds: each user holds a ticket, then
    /// confirms it (a share, `--confirm-ratio`) or lets it lapse
    /// (`--hold-secs`), and a lapsed ticket goes to the head of the queue.
    Checkout,
    /// `GET /health`: the HTTP ceiling, touching no actor and no database.
    Ceiling,
}

/// One request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Book { event: usize, user: u64 },
    Cancel { event: usize, user: u64 },
    Hold { event: usize, user: u64 },
    Confirm { event: usize, user: u64 },
    Health,
}

/// The plan of a run: when it ends, and which request comes next.
pub struct Plan {
    pub scenario: Scenario,
    events: usize,
    cancel_ratio: f64,
    /// Checkout: share of holds confirmed.
    confirm_ratio: f64,
    /// Most requests to send; bookings also end when every user has booked.
    limit: u64,
    users: u64,
    pub started: Instant,
    pub deadline: Instant,
    /// Requests handed out so far.
    sent: AtomicU64,
    /// Next user number that has not booked yet.
    next_user: AtomicU64,
    /// Churn: users the clients were told hold a ticket, to cancel from.
    holders: Mutex<Vec<u64>>,
    /// Checkout: users told they hold a ticket, who will confirm it.
    to_confirm: Mutex<Vec<u64>>,
}

/// The share of a run's requests that each kind takes.
#[derive(Debug, Clone, Copy)]
pub struct Ratios {
    /// Churn: share of requests that cancel a booked user's ticket.
    pub cancel: f64,
    /// Checkout: share of holds confirmed.
    pub confirm: f64,
}

impl Plan {
    pub fn new(
        scenario: Scenario,
        events: usize,
        users: u64,
        limit: u64,
        duration: Duration,
        ratios: Ratios,
    ) -> Self {
        let started = Instant::now();
        Plan {
            scenario,
            events,
            cancel_ratio: ratios.cancel,
            confirm_ratio: ratios.confirm,
            limit,
            users,
            started,
            deadline: started + duration,
            sent: AtomicU64::new(0),
            next_user: AtomicU64::new(0),
            holders: Mutex::new(Vec::new()),
            to_confirm: Mutex::new(Vec::new()),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The next request, or `None` once the run is over.
    pub fn next(&self, rng: &mut Rng) -> Option<Op> {
        if Instant::now() >= self.deadline
            || self.sent.fetch_add(1, Ordering::Relaxed) >= self.limit
        {
            return None;
        }
        match self.scenario {
            Scenario::Ceiling => Some(Op::Health),
            Scenario::Drop => self.new_user().map(|user| Op::Book { event: 0, user }),
            Scenario::Spread => {
                let event = rng.below(self.events as u64) as usize;
                self.new_user().map(|user| Op::Book { event, user })
            }
            Scenario::Churn => {
                if rng.chance(self.cancel_ratio) {
                    let mut holders = self.holders.lock().unwrap();
                    if !holders.is_empty() {
                        let index = rng.below(holders.len() as u64) as usize;
                        return Some(Op::Cancel {
                            event: 0,
                            user: holders.swap_remove(index),
                        });
                    }
                }
                self.new_user().map(|user| Op::Book { event: 0, user })
            }
            Scenario::Checkout => {
                if let Some(user) = self.to_confirm.lock().unwrap().pop() {
                    return Some(Op::Confirm { event: 0, user });
                }
                self.new_user().map(|user| Op::Hold { event: 0, user })
            }
        }
    }

    /// Checkout: whether `user` confirms its hold, the same at every ask.
    fn confirms(&self, user: u64) -> bool {
        let spread = user.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
        ((spread as f64) / (1u64 << 53) as f64) < self.confirm_ratio
    }

    /// Churn learns who holds a ticket from the answers; checkout, who
    /// holds one to confirm.
    pub fn learn(&self, outcome: &Outcome, op: Op) {
        if let (Outcome::Held { .. }, Op::Hold { user, .. }) = (outcome, op) {
            if self.confirms(user) {
                self.to_confirm.lock().unwrap().push(user);
            }
            return;
        }
        if self.scenario != Scenario::Churn {
            return;
        }
        match (outcome, op) {
            (Outcome::Booked, Op::Book { user, .. }) => self.holders.lock().unwrap().push(user),
            (Outcome::Reassigned { to }, _) => self.holders.lock().unwrap().push(*to),
            _ => {}
        }
    }

    fn new_user(&self) -> Option<u64> {
        let user = self.next_user.fetch_add(1, Ordering::Relaxed);
        (user < self.users).then_some(user)
    }
}

/// A small xorshift generator: the load needs spread, not cryptography.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= probability && probability > 0.0
    }
}
