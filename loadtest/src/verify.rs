//! After the storm: does the server hold exactly what its clients were told?
//! And, for checkout, while it runs: do the event's counts keep the
//! invariants of holds at every reading ([`watch_counts`])?

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};

use super::api::{instant_ms, Api, EventCounts, Outcome, Routes, Standing};
use super::report::Record;
use super::scenario::Op;

/// Violations listed at most; the count says how many there were.
const MAX_LISTED: usize = 50;

/// What the clients were told about one user at one event.
#[derive(Debug, Default, Clone, Copy)]
struct Told {
    /// Joined the waiting list: the position told, and when the request went and came back.
    joined: Option<(u64, u64, u64)>,
    booked: bool,
    /// Got a ticket when a holder cancelled.
    promoted: bool,
    cancelled: bool,
    /// A request about this user got no clear answer: its effect is unknown.
    unclear: bool,
    /// A request was refused (server busy): it changed nothing.
    refused: bool,
    /// Checkout: told it holds a ticket until then (ms since the Unix epoch).
    held: Option<i64>,
    /// Checkout: its confirm booked the held ticket.
    confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Booked,
    Waiting,
    Cancelled,
    /// Held a ticket until then and did not book it: lapsed at that instant.
    Expired(i64),
    /// Only ever refused: the server must not know the user.
    Absent,
}

impl Told {
    fn expected(&self) -> Option<Expected> {
        match *self {
            Told { unclear: true, .. } => None,
            Told {
                cancelled: true, ..
            } => Some(Expected::Cancelled),
            Told { booked: true, .. }
            | Told { promoted: true, .. }
            | Told {
                confirmed: true, ..
            } => Some(Expected::Booked),
            Told {
                held: Some(expires_at),
                ..
            } => Some(Expected::Expired(expires_at)),
            Told {
                joined: Some(_), ..
            } => Some(Expected::Waiting),
            Told { refused: true, .. } => Some(Expected::Absent),
            _ => None,
        }
    }
}

/// Collects violations, listing the first few.
#[derive(Default)]
struct Findings {
    listed: Vec<String>,
    total: usize,
}

impl Findings {
    fn add(&mut self, violation: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(violation);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.total > self.listed.len() {
            let more = self.total - self.listed.len();
            self.listed.push(format!("... and {more} more"));
        }
        self.listed
    }
}

/// The time now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads `event`'s counts every 20 ms until `done`: booked and held tickets
/// never exceed its capacity, and while anyone waits every ticket is
/// booked or held. Returns the violations seen.
pub async fn watch_counts(url: &str, event: &str, done: &AtomicBool) -> Vec<String> {
    let api = Api::new(url, 1).on(Routes::Resource);
    let mut findings = Findings::default();
    while !done.load(Ordering::Relaxed) {
        if let Ok(counts) = api.event_counts(event).await {
            check_counts(event, &counts, &mut findings);
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    findings.finish()
}

/// The invariants of one reading of an event's counts.
fn check_counts(event: &str, counts: &EventCounts, findings: &mut Findings) {
    let taken = counts.booked_tickets + counts.held_tickets;
    if taken > counts.total_tickets {
        findings.add(format!(
            "event {event}: {} booked and {} held of {} tickets",
            counts.booked_tickets, counts.held_tickets, counts.total_tickets
        ));
    }
    if counts.waiting_list_count > 0 && taken < counts.total_tickets {
        findings.add(format!(
            "event {event}: {} tickets free while {} wait",
            counts.total_tickets - taken,
            counts.waiting_list_count
        ));
    }
}

/// Checks the server against `records`: counts, every user's standing,
/// waiting positions 1..n, and that promotions went to the head of the
/// queue. After a checkout, it first waits until a second after the last
/// hold's expiry: every hold not booked must have lapsed by then.
pub async fn verify(
    api: &Api,
    events: &[String],
    tickets: u32,
    records: &[Record],
    concurrency: usize,
) -> Vec<String> {
    let mut told: HashMap<(usize, u64), Told> = HashMap::new();
    for record in records {
        let unclear = record.outcome == Outcome::Error;
        let refused = matches!(record.outcome, Outcome::Refused { .. });
        match (record.op, &record.outcome) {
            (Op::Book { event, user }, outcome) => {
                let entry = told.entry((event, user)).or_default();
                entry.unclear |= unclear;
                entry.refused |= refused;
                match outcome {
                    Outcome::Booked => entry.booked = true,
                    Outcome::Waiting { position } => {
                        entry.joined = Some((*position, record.sent_us, record.received_us))
                    }
                    _ => {}
                }
            }
            (Op::Cancel { event, user }, outcome) => {
                let entry = told.entry((event, user)).or_default();
                entry.unclear |= unclear;
                entry.refused |= refused;
                entry.cancelled |= !unclear && !refused;
                if let Outcome::Reassigned { to } = outcome {
                    told.entry((event, *to)).or_default().promoted = true;
                }
            }
            (Op::Hold { event, user }, outcome) => {
                let entry = told.entry((event, user)).or_default();
                entry.unclear |= unclear;
                entry.refused |= refused;
                match outcome {
                    Outcome::Held { expires_at_ms } => entry.held = Some(*expires_at_ms),
                    Outcome::Waiting { position } => {
                        entry.joined = Some((*position, record.sent_us, record.received_us))
                    }
                    _ => {}
                }
            }
            (Op::Confirm { event, user }, outcome) => {
                let entry = told.entry((event, user)).or_default();
                entry.unclear |= unclear;
                entry.confirmed |= *outcome == Outcome::Booked;
            }
            (Op::Health, _) => {}
        }
    }

    let last_expiry = told.values().filter_map(|t| t.held).max();
    if let Some(last_expiry) = last_expiry {
        let wait = last_expiry + 1_000 - now_ms();
        if wait > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
    let mut findings = Findings::default();
    if last_expiry.is_some() {
        // Before any read reaches the event's actor (which lapses what is
        // due before it answers): the holds lapsed by the actor's own timer.
        for event in events {
            match api.committed_counts(event).await {
                Ok(counts) if counts.held_tickets > 0 => findings.add(format!(
                    "event {event}: {} holds still committed a second after the last expiry",
                    counts.held_tickets
                )),
                Ok(_) => {}
                Err(error) => findings.add(error),
            }
        }
    }
    for (index, event) in events.iter().enumerate() {
        let users: Vec<(u64, Told)> = told
            .iter()
            .filter(|((e, _), _)| *e == index)
            .map(|((_, user), t)| (*user, *t))
            .collect();
        verify_event(api, event, tickets, &users, concurrency, &mut findings).await;
    }
    findings.finish()
}

async fn verify_event(
    api: &Api,
    event: &str,
    tickets: u32,
    users: &[(u64, Told)],
    concurrency: usize,
    findings: &mut Findings,
) {
    let count = |wanted| {
        users
            .iter()
            .filter(|(_, t)| t.expected() == Some(wanted))
            .count() as u64
    };
    let unclear = users.iter().filter(|(_, t)| t.unclear).count() as u64;
    let (booked, waiting) = (count(Expected::Booked), count(Expected::Waiting));
    // A lapsed hold's ticket goes to the head of the queue, and no client
    // is told: those told they wait may have been booked since.
    let silent_promotions = users.iter().any(|(_, t)| t.held.is_some());
    let counts = match api.event_counts(event).await {
        Ok(counts) => counts,
        Err(error) => return findings.add(error),
    };
    check_counts(event, &counts, findings);
    if counts.booked_tickets > u64::from(tickets) || counts.booked_tickets > counts.total_tickets {
        findings.add(format!(
            "event {event}: oversold, {} booked of {tickets} tickets",
            counts.booked_tickets
        ));
    }
    if silent_promotions {
        let promoted = waiting.saturating_sub(counts.waiting_list_count);
        if counts.booked_tickets.abs_diff(booked + promoted) > unclear {
            findings.add(format!(
                "event {event}: the server counts {} booked, clients were told {booked}, and \
                 {promoted} left the queue ({unclear} unclear)",
                counts.booked_tickets
            ));
        }
        if counts.waiting_list_count > waiting + unclear || counts.held_tickets > unclear {
            findings.add(format!(
                "event {event}: {} waiting and {} held after every hold's expiry; clients \
                 were told {waiting} waiting ({unclear} unclear)",
                counts.waiting_list_count, counts.held_tickets
            ));
        }
    } else if counts.booked_tickets.abs_diff(booked) > unclear {
        findings.add(format!(
            "event {event}: the server counts {} booked, clients were told {booked} ({unclear} unclear)",
            counts.booked_tickets
        ));
    }
    if !silent_promotions && counts.waiting_list_count.abs_diff(waiting) > unclear {
        findings.add(format!(
            "event {event}: the server counts {} waiting, clients were told {waiting} ({unclear} unclear)",
            counts.waiting_list_count
        ));
    }

    // Every user's standing, as the per-user lookup reports it.
    let lookups: Vec<(u64, Told, Result<Option<Standing>, String>)> =
        stream::iter(users.iter().copied())
            .filter(|(_, t)| std::future::ready(t.expected().is_some()))
            .map(|(user, t)| async move { (user, t, api.standing(event, user).await) })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut still_waiting = Vec::new();
    for (user, t, standing) in &lookups {
        let expected = match t.expected() {
            Some(Expected::Booked) => "booked",
            Some(Expected::Waiting) => "waiting",
            Some(Expected::Cancelled) | None => "cancelled",
            Some(Expected::Expired(expires_at)) => {
                check_lapse(event, *user, expires_at, standing, findings);
                continue;
            }
            Some(Expected::Absent) => {
                match standing {
                    Ok(None) => {}
                    Ok(Some(standing)) => findings.add(format!(
                        "event {event}: u{user} was refused, yet the server has it {}",
                        standing.status
                    )),
                    Err(error) => findings.add(error.clone()),
                }
                continue;
            }
        };
        match standing {
            // Promoted by a lapse, silently.
            Ok(Some(standing))
                if silent_promotions && expected == "waiting" && standing.status == "booked" => {}
            Ok(Some(standing)) if standing.status == expected => {
                if let (Some(position), Some((_, sent, received))) = (standing.position, t.joined) {
                    still_waiting.push((position, sent, received, *user, t.joined.map(|j| j.0)));
                }
            }
            Ok(Some(standing)) => findings.add(format!(
                "event {event}: u{user} was told {expected}, the server says {}",
                standing.status
            )),
            Ok(None) => findings.add(format!(
                "event {event}: u{user} was told {expected}, the server does not know it"
            )),
            Err(error) => findings.add(error.clone()),
        }
    }

    // The waiting list is exactly positions 1..n.
    still_waiting.sort_unstable();
    if still_waiting
        .iter()
        .enumerate()
        .any(|(i, (position, ..))| *position != i as u64 + 1)
    {
        let positions: Vec<u64> = still_waiting.iter().take(10).map(|w| w.0).collect();
        findings.add(format!(
            "event {event}: waiting positions are not 1..{}: {positions:?}...",
            still_waiting.len()
        ));
    }
    // Without promotions or users leaving, each keeps the position it was told.
    let queue_moved = silent_promotions
        || users
            .iter()
            .any(|(_, t)| t.promoted || (t.cancelled && t.joined.is_some()));
    if !queue_moved {
        for (position, _, _, user, told_position) in &still_waiting {
            if Some(*position) != *told_position {
                findings.add(format!(
                    "event {event}: u{user} was told position {told_position:?}, is at {position}"
                ));
            }
        }
    }

    // FIFO: a user who surely joined before another is ahead of it, and is
    // never still waiting when that other one got a ticket. "Surely before"
    // means its answer came back before the other's request went out.
    let mut latest_sent_ahead = 0;
    for (position, sent, received, user, _) in &still_waiting {
        if latest_sent_ahead > *received {
            findings.add(format!("event {event}: u{user} joined before someone now ahead of it (position {position})"));
        }
        latest_sent_ahead = latest_sent_ahead.max(*sent);
    }
    if let Some(first_answered) = still_waiting.iter().map(|w| w.2).min() {
        for (user, t) in users.iter().filter(|(_, t)| t.promoted) {
            if let Some((_, sent, _)) = t.joined.filter(|(_, sent, _)| *sent > first_answered) {
                findings.add(format!(
                    "event {event}: u{user} got a ticket ahead of a user who joined before it ({sent} us)"
                ));
            }
        }
    }
}

/// A hold told to last until `expires_at` and not booked: a second after
/// that, the user's standing must say it lapsed, then.
fn check_lapse(
    event: &str,
    user: u64,
    expires_at: i64,
    standing: &Result<Option<Standing>, String>,
    findings: &mut Findings,
) {
    let standing = match standing {
        Ok(Some(standing)) => standing,
        Ok(None) => {
            return findings.add(format!(
                "event {event}: u{user} held a ticket, the server does not know it"
            ))
        }
        Err(error) => return findings.add(error.clone()),
    };
    let expired_at = standing.expired_at.as_deref().and_then(instant_ms);
    match standing.status.as_str() {
        "expired" if expired_at == Some(expires_at) => {}
        "held" => findings.add(format!(
            "event {event}: u{user}'s hold outlived its expiry by more than a second"
        )),
        other => findings.add(format!(
            "event {event}: u{user} held a ticket until {expires_at} ms and did not book it, \
             the server says {other} (expired at {expired_at:?})"
        )),
    }
}
