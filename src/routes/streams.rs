//! The streams, as server-sent events (actix-web-lab's `sse`, which frames
//! them and sends the keep-alive comments), each at most `STREAM_RATE` a
//! second: a burst of changes comes as its newest value.
//!
//! `GET /api/events/{eventId}/stream`: the event's status as stored, then
//! its status after each committed change (see `StatusFeed`). Each event's
//! `id` is the event's version, so that a client that reconnects with
//! `Last-Event-ID` hears at once only what it missed. It needs no event
//! actor: the statuses come from the store's commits and the first one from
//! the database, so an event may passivate and activate again under an
//! open stream, which goes on.
//!
//! `GET /api/events/{eventId}/bookings/{userId}/stream`: a user's standing,
//! at once and whenever it moves. The event's actor works out the watched
//! users' standings after its changes (see `EventActor::publish_standings`)
//! and the store publishes them once those changes are committed; an actor
//! activated again finds its watchers in the feed, so this stream too goes
//! on across a passivation.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, Responder};
use actix_web_lab::sse;
use futures::future::{select, Either};
use tokio::sync::watch;

use super::extract::{path_event, path_order, OrderRequest, PathSegments};
use super::openapi;
use super::status::{EventStatus, UserStatus};
use crate::actors::{EventRegistry, GetSummary, StatusFeed, StreamSlot, WatchStanding};
use crate::booking::{Standing, Summary};
use crate::error::{ApiError, ErrorBody};
use crate::ids::{EventId, UserId};
use crate::storage::Database;

/// Statuses a stream sends a second, at most.
const STREAM_RATE: u32 = 10;

/// A comment line this often keeps an idle stream open through proxies
/// that close a connection silent for longer.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event of a status stream, as its fields arrive: the schema of the
/// stream's items in the OpenAPI document, never built (`sse` frames them).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct StatusEvent {
    /// Always `status`.
    #[schema(example = "status")]
    event: String,
    /// The event's version: it grows with every committed change.
    #[schema(example = "42")]
    id: String,
    /// The JSON of the event's status, as `GET /api/events/{eventId}` answers it.
    data: String,
}

/// `GET /api/events/{eventId}/stream`: the event's status, then its status
/// after each committed change, as server-sent events.
#[utoipa::path(
    get,
    path = "/api/events/{eventId}/stream",
    tag = "events",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event a client received: the stream starts with the current status unless its version is that id"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: status`, `id:` the event's version (it grows with every committed change), `data:` the body of `GET /api/events/{eventId}`; at most 10 a second, and a comment line every 15 s while idle", content_type = "text/event-stream", body = StatusEvent),
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        (status = 503, description = "`max_streams` streams are open (`too_many_streams`, `Retry-After`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn event_stream(
    feed: web::Data<StatusFeed>,
    database: web::Data<Database>,
    registry: web::Data<EventRegistry>,
    req: HttpRequest,
    PathSegments(event): PathSegments<String>,
) -> Result<impl Responder, ApiError> {
    let event = path_event(&event)?;
    let slot = feed
        .clone()
        .into_inner()
        .open_stream()
        .ok_or(ApiError::TooManyStreams)?;
    // Subscribed before the database is read: no commit falls in between.
    let updates = feed.subscribe(&event);
    if database.fences() {
        // Several instances: the stream is served by the event's owner,
        // whose commits it shows, so the event comes here (see `directory`);
        // if it leaves, the stream ends and its client reconnects.
        registry.ask(&event, GetSummary).await?;
    }
    let stored = {
        let (database, event) = (database.clone(), event.clone());
        web::block(move || database.stored_event(&event)).await
    };
    let stored = match stored {
        Ok(Ok(Some(stored))) => stored,
        Ok(Ok(None)) => return Err(ApiError::EventNotFound),
        Ok(Err(error)) => {
            log::error!("reading event {event} for its stream failed: {error}");
            return Err(ApiError::StorageUnavailable);
        }
        Err(_) => return Err(ApiError::ServiceUnavailable),
    };
    let seen = req
        .headers()
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.trim().parse::<u64>().ok());
    let hold_secs = registry.hold_secs();
    let stored = stored.summary();
    let event_of = move |status: Summary| -> sse::Event {
        let body = EventStatus::new(event.clone(), status, hold_secs);
        let data = serde_json::to_string(&body).expect("a status serializes");
        let id = status.version.to_string();
        sse::Data::new(data).event("status").id(id).into()
    };
    // At once, unless the client has this very version: an id behind it, or
    // ahead of it (a database restored, an event created again), is not
    // what the event is now.
    let first = (seen != Some(stored.version)).then(|| event_of(stored));
    // Then only what is newer than the newest sent.
    let mut sent = stored.version;
    let render = move |status: Summary| {
        (status.version > sent).then(|| {
            sent = status.version;
            event_of(status)
        })
    };
    Ok(Paced::stream(first, updates, render, &feed, slot))
}

/// One event of a standing stream: the schema of the stream's items in the
/// OpenAPI document, never built (`sse` frames them).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct StandingEvent {
    /// Always `standing`.
    #[schema(example = "standing")]
    event: String,
    /// The JSON of the user's standing, as `GET /api/events/{eventId}/bookings/{userId}` answers it.
    data: String,
}

/// `GET /api/events/{eventId}/bookings/{userId}/stream`: the user's
/// standing, then their standing whenever a committed change moved it.
#[utoipa::path(
    get,
    path = "/api/events/{eventId}/bookings/{userId}/stream",
    tag = "bookings",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `event: standing`, `data:` the body of `GET /api/events/{eventId}/bookings/{userId}`, at once and after each committed change that moved it (a place in the queue, an offer, a lapse); at most 10 a second, and a comment line every 15 s while idle", content_type = "text/event-stream", body = StandingEvent),
        (status = 404, description = "Event or booking not found (`event_not_found`, `booking_not_found`)", body = ErrorBody),
        (status = 503, description = "`max_streams` streams are open (`too_many_streams`, `Retry-After`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn standing_stream(
    feed: web::Data<StatusFeed>,
    registry: web::Data<EventRegistry>,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<impl Responder, ApiError> {
    let OrderRequest { event, user } = path_order(&event, &user)?;
    let slot = feed
        .clone()
        .into_inner()
        .open_stream()
        .ok_or(ApiError::TooManyStreams)?;
    // Watched before the actor is asked: it publishes the standing to this.
    let mut updates = feed.watch_standing(&event, user.key());
    let watch = WatchStanding {
        user: user.key().clone(),
    };
    if !registry.ask(&event, watch).await? {
        return Err(ApiError::BookingNotFound);
    }
    let render = move |standing: Standing| {
        let body = UserStatus::new(event.clone(), user.clone(), standing);
        let data = serde_json::to_string(&body).expect("a standing serializes");
        Some(sse::Data::new(data).event("standing").into())
    };
    // Published before the actor answered.
    let first = updates.borrow_and_update().and_then(render.clone());
    Ok(Paced::stream(first, updates, render, &feed, slot))
}

/// One stream's state between two of its events: the newest value of a
/// feed's channel, rendered, at most `STREAM_RATE` a second.
struct Paced<T> {
    /// The first event, sent at once.
    first: Option<sse::Event>,
    updates: watch::Receiver<Option<T>>,
    /// The event for a value; `None`: nothing this stream has not sent.
    render: Box<dyn FnMut(T) -> Option<sse::Event>>,
    /// Not before this, the next event: `STREAM_RATE` a second at most.
    next_at: Instant,
    /// Set once the server stops: the stream ends, and the client reconnects.
    stopping: watch::Receiver<bool>,
    /// Its place among the `max_streams` open, held as long as the stream.
    _slot: StreamSlot,
}

impl<T: Copy + 'static> Paced<T> {
    /// The response: `first`, then each newer value of `updates` as `render` makes it.
    fn stream(
        first: Option<sse::Event>,
        updates: watch::Receiver<Option<T>>,
        render: impl FnMut(T) -> Option<sse::Event> + 'static,
        feed: &StatusFeed,
        slot: StreamSlot,
    ) -> impl Responder {
        let paced = Paced {
            first,
            updates,
            render: Box::new(render),
            next_at: Instant::now(),
            stopping: feed.stopping(),
            _slot: slot,
        };
        let events = futures::stream::unfold(paced, Paced::next);
        sse::Sse::from_infallible_stream(events).with_keep_alive(KEEP_ALIVE)
    }

    /// The next event of the stream; `None` ends it (the server stops).
    async fn next(mut self) -> Option<(sse::Event, Self)> {
        if let Some(first) = self.first.take() {
            return Some(self.sent(first));
        }
        loop {
            let wait = self.next_at.saturating_duration_since(Instant::now());
            actix_web::rt::time::sleep(wait).await;
            let changed = Box::pin(self.updates.changed());
            let stopping = Box::pin(self.stopping.wait_for(|stopping| *stopping));
            match select(changed, stopping).await {
                Either::Left((Ok(()), _)) => {}
                Either::Left((Err(_), _)) | Either::Right(_) => return None,
            }
            let newest = *self.updates.borrow_and_update();
            if let Some(event) = newest.and_then(&mut self.render) {
                return Some(self.sent(event));
            }
        }
    }

    fn sent(mut self, event: sse::Event) -> (sse::Event, Self) {
        self.next_at = Instant::now() + Duration::from_secs(1) / STREAM_RATE;
        (event, self)
    }
}
