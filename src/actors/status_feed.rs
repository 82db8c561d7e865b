//! What the streams read: each event's status as of its last committed
//! change, and the standings of the users someone watches, published by the
//! store once the commit holding them returned, never before (a stream
//! never shows a change that a storage failure then refused). One `watch`
//! channel per event, and per watched user, that has a stream open: a
//! reader sees the newest value and skips those it was too slow for, so
//! nothing is ever buffered for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::booking::{Standing, Summary};
use crate::ids::{EventId, UserKey};
use crate::telemetry;

/// The newest committed status of each event that has a stream open, and
/// the newest committed standing of each user that has one.
pub struct StatusFeed {
    /// Only events with a stream open: a publish to any other is one lookup.
    channels: DashMap<EventId, watch::Sender<Option<Summary>>>,
    /// Only events with a user's stream open, and only those users: the
    /// event's actor works out these users' standings after its changes
    /// (see `EventActor::publish_standings`).
    standings: DashMap<EventId, HashMap<UserKey, watch::Sender<Option<Standing>>>>,
    /// Streams open now, against `max_streams`.
    open: AtomicUsize,
    max_streams: usize,
    /// Set once the server stops: every stream ends, so that its connection
    /// closes with the others instead of holding up the stop.
    stopping: watch::Sender<bool>,
}

/// A stream's place among the `max_streams` open ones, given back when the
/// stream ends (the client went away, or the server stops).
pub struct StreamSlot(Arc<StatusFeed>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        telemetry::stream_closed();
    }
}

impl StatusFeed {
    pub fn new(max_streams: usize) -> Arc<Self> {
        Arc::new(StatusFeed {
            channels: DashMap::new(),
            standings: DashMap::new(),
            open: AtomicUsize::new(0),
            max_streams,
            stopping: watch::channel(false).0,
        })
    }

    /// Ends every stream: the server stops.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Says when the server stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// A place for one more stream, or `None` when `max_streams` are open.
    pub fn open_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_streams {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        telemetry::stream_opened();
        Some(StreamSlot(self.clone()))
    }

    /// Forgets the channels whose streams have all ended: most are
    /// forgotten at the event's next change, but a stream refused before it
    /// began (no such event, no such user) or closed on an idle event
    /// leaves its channel until this runs (every second).
    pub fn forget_unwatched(&self) {
        self.channels
            .retain(|_, channel| channel.receiver_count() > 0);
        self.standings.retain(|_, users| {
            users.retain(|_, channel| channel.receiver_count() > 0);
            !users.is_empty()
        });
    }

    /// Ends every stream: this instance's session with the shared database
    /// ended, and with it its right to decide for any event.
    pub fn end_all_streams(&self) {
        self.channels.clear();
        self.standings.clear();
    }

    /// Ends the streams of `event`, status and standings: this instance no
    /// longer decides for it (handed to another instance, or its database
    /// session ended), so no commit of its would come. Their clients
    /// reconnect, and the event's owner serves them.
    pub fn end_streams(&self, event: &EventId) {
        self.channels.remove(event);
        self.standings.remove(event);
    }

    /// The event's committed statuses from now on (`None` until the next
    /// commit publishes one).
    pub fn subscribe(&self, event: &EventId) -> watch::Receiver<Option<Summary>> {
        self.channels
            .entry(event.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// The event's status after a committed change; older ones than the
    /// status already there are ignored. Forgets an event whose streams
    /// have all ended.
    pub fn publish(&self, event: &EventId, status: Summary) {
        let Some(channel) = self.channels.get(event) else {
            return;
        };
        if channel.receiver_count() == 0 {
            drop(channel);
            self.channels
                .remove_if(event, |_, channel| channel.receiver_count() == 0);
            return;
        }
        channel.send_if_modified(|newest| {
            let newer = newest.is_none_or(|newest| newest.version < status.version);
            if newer {
                *newest = Some(status);
            }
            newer
        });
    }
}

impl StatusFeed {
    /// `user`'s committed standings at `event` from now on: `None` until
    /// the event's actor publishes one (see `EventActor::publish_standings`).
    pub fn watch_standing(
        &self,
        event: &EventId,
        user: &UserKey,
    ) -> watch::Receiver<Option<Standing>> {
        self.standings
            .entry(event.clone())
            .or_default()
            .entry(user.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Whether anyone watches a user's standing at `event`: one lookup,
    /// made after each of its changes.
    pub fn watches_standings(&self, event: &EventId) -> bool {
        self.standings.contains_key(event)
    }

    /// The users whose standing at `event` someone watches; forgets those
    /// whose streams have all ended, and the event once none is left.
    pub fn watched_users(&self, event: &EventId) -> Vec<UserKey> {
        let Some(mut users) = self.standings.get_mut(event) else {
            return Vec::new();
        };
        users.retain(|_, channel| channel.receiver_count() > 0);
        let watched = users.keys().cloned().collect();
        drop(users);
        self.standings.remove_if(event, |_, users| users.is_empty());
        watched
    }

    /// Users' standings after a committed change; only those that moved
    /// wake their streams.
    pub fn publish_standings(&self, event: &EventId, standings: &[(UserKey, Standing)]) {
        let Some(users) = self.standings.get(event) else {
            return;
        };
        for (user, standing) in standings {
            if let Some(channel) = users.get(user) {
                channel.send_if_modified(|newest| {
                    let moved = *newest != Some(*standing);
                    *newest = Some(*standing);
                    moved
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::EventSettings;

    fn status(version: u64) -> Summary {
        Summary {
            version,
            settings: EventSettings::new(1),
            booked_tickets: 0,
            held_tickets: 0,
            waiting: 0,
        }
    }

    #[test]
    fn readers_see_the_newest_status_and_streams_are_bounded() {
        let feed = StatusFeed::new(1);
        let event = EventId::parse("e").unwrap();
        // Nobody listens: nothing is kept.
        feed.publish(&event, status(1));
        assert!(feed.channels.is_empty());
        let reader = feed.subscribe(&event);
        feed.publish(&event, status(3));
        feed.publish(&event, status(2));
        assert_eq!(reader.borrow().map(|s| s.version), Some(3), "older ignored");
        drop(reader);
        feed.publish(&event, status(4));
        assert!(feed.channels.is_empty(), "forgotten once nobody listens");
        let slot = feed.open_stream().expect("room for one");
        assert!(feed.open_stream().is_none(), "max_streams open");
        drop(slot);
        assert!(feed.open_stream().is_some());
    }

    #[test]
    fn watched_standings_wake_only_when_they_move_and_are_forgotten_with_their_streams() {
        let feed = StatusFeed::new(1);
        let event = EventId::parse("e").unwrap();
        let user: UserKey = "u".into();
        assert!(!feed.watches_standings(&event));
        let mut reader = feed.watch_standing(&event, &user);
        assert!(feed.watches_standings(&event));
        assert_eq!(feed.watched_users(&event), vec![user.clone()]);
        let waiting = |position| (user.clone(), Standing::Waiting { position });
        feed.publish_standings(&event, &[waiting(2)]);
        assert!(reader.has_changed().unwrap());
        assert_eq!(
            *reader.borrow_and_update(),
            Some(Standing::Waiting { position: 2 })
        );
        feed.publish_standings(&event, &[waiting(2)]);
        assert!(!reader.has_changed().unwrap(), "the same standing again");
        feed.publish_standings(&event, &[waiting(1)]);
        assert!(reader.has_changed().unwrap());
        drop(reader);
        assert!(feed.watched_users(&event).is_empty());
        assert!(
            !feed.watches_standings(&event),
            "forgotten once nobody watches"
        );
    }

    #[test]
    fn ending_an_events_streams_closes_their_channels() {
        let feed = StatusFeed::new(2);
        let event = EventId::parse("e").unwrap();
        let status = feed.subscribe(&event);
        let standing = feed.watch_standing(&event, &"u".into());
        feed.end_streams(&event);
        assert!(status.has_changed().is_err(), "the status stream ends");
        assert!(standing.has_changed().is_err(), "the standing stream ends");
    }

    #[test]
    fn channels_of_ended_streams_are_forgotten_each_second() {
        let feed = StatusFeed::new(2);
        let (gone, open) = (
            EventId::parse("gone").unwrap(),
            EventId::parse("open").unwrap(),
        );
        drop(feed.subscribe(&gone));
        drop(feed.watch_standing(&gone, &"u".into()));
        let _status = feed.subscribe(&open);
        let _standing = feed.watch_standing(&open, &"u".into());
        feed.forget_unwatched();
        assert!(!feed.channels.contains_key(&gone) && !feed.watches_standings(&gone));
        assert!(feed.channels.contains_key(&open) && feed.watches_standings(&open));
        feed.end_all_streams();
        assert!(feed.channels.is_empty() && feed.standings.is_empty());
    }
}
