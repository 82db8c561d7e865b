//! After the storm: does the server hold exactly what its clients were told?

use std::collections::HashMap;

use futures::stream::{self, StreamExt};

use super::api::{Api, Outcome, Standing};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Booked,
    Waiting,
    Cancelled,
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
            Told { booked: true, .. } | Told { promoted: true, .. } => Some(Expected::Booked),
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

/// Checks the server against `records`: counts, every user's standing,
/// waiting positions 1..n, and that promotions went to the head of the queue.
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
            (Op::Health, _) => {}
        }
    }

    let mut findings = Findings::default();
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
    let counts = match api.event_counts(event).await {
        Ok(counts) => counts,
        Err(error) => return findings.add(error),
    };
    if counts.booked_tickets > u64::from(tickets) || counts.booked_tickets > counts.total_tickets {
        findings.add(format!(
            "event {event}: oversold, {} booked of {tickets} tickets",
            counts.booked_tickets
        ));
    }
    if counts.booked_tickets.abs_diff(booked) > unclear {
        findings.add(format!(
            "event {event}: the server counts {} booked, clients were told {booked} ({unclear} unclear)",
            counts.booked_tickets
        ));
    }
    if counts.waiting_list_count.abs_diff(waiting) > unclear {
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
    let queue_moved = users
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
