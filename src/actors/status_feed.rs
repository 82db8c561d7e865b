//! What the status streams of events read: each event's status as of its
//! last committed change, published by the store once the commit holding
//! it returned, never before (a stream never shows a change that a storage
//! failure then refused). One `watch` channel per event that has a stream
//! open: a reader sees the newest status and skips those it was too slow
//! for, so nothing is ever buffered for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::booking::Summary;
use crate::ids::EventId;
use crate::telemetry;

/// The newest committed status of each event that has a stream open.
pub struct StatusFeed {
    /// Only events with a stream open: a publish to any other is one lookup.
    channels: DashMap<EventId, watch::Sender<Option<Summary>>>,
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
}
