//! `GET /api/events/{eventId}/stream`: the event's status as server-sent
//! events (actix-web-lab's `sse`, which frames them and sends the keep-alive
//! comments). First the status as stored, then the status after each
//! committed change (see `StatusFeed`), at most `STREAM_RATE` a second: a
//! burst of changes comes as its newest status. Each event's `id` is the
//! event's version, so that a client that reconnects with `Last-Event-ID`
//! hears at once only what it missed.
//!
//! The stream needs no event actor: the statuses come from the store's
//! commits and the first one from the database, so an event may passivate
//! and activate again under an open stream, which goes on.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, Responder};
use actix_web_lab::sse;
use futures::future::{select, Either};
use tokio::sync::watch;

use super::extract::PathSegments;
use super::openapi;
use super::status::EventStatus;
use crate::actors::{EventRegistry, StatusFeed, StreamSlot};
use crate::booking::Summary;
use crate::error::{ApiError, ErrorBody};
use crate::ids::EventId;
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
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event a client received: the stream starts with the current status only if it is newer"),
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
    let event = EventId::parse(&event).map_err(ApiError::InvalidInput)?;
    let slot = feed
        .clone()
        .into_inner()
        .open_stream()
        .ok_or(ApiError::TooManyStreams)?;
    // Subscribed before the database is read: no commit falls in between.
    let updates = feed.subscribe(&event);
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
    let stored = stored.summary();
    let follow = Follow {
        event,
        hold_secs: registry.hold_secs(),
        first: Some(stored).filter(|status| seen.is_none_or(|seen| status.version > seen)),
        sent: seen.unwrap_or(0),
        updates,
        next_at: Instant::now(),
        stopping: feed.stopping(),
        _slot: slot,
    };
    let events = futures::stream::unfold(follow, Follow::next);
    Ok(sse::Sse::from_infallible_stream(events).with_keep_alive(KEEP_ALIVE))
}

/// One stream's state between two of its events.
struct Follow {
    event: EventId,
    /// The server's hold duration, for the status body.
    hold_secs: u32,
    /// The status read from the database, if the client has not seen it.
    first: Option<Summary>,
    /// The newest version sent (or seen by the client before it reconnected).
    sent: u64,
    updates: watch::Receiver<Option<Summary>>,
    /// Not before this, the next status: `STREAM_RATE` a second at most.
    next_at: Instant,
    /// Set once the server stops: the stream ends, and the client reconnects.
    stopping: watch::Receiver<bool>,
    /// Its place among the `max_streams` open, held as long as the stream.
    _slot: StreamSlot,
}

impl Follow {
    /// The next event of the stream; `None` ends it (the server stops).
    async fn next(mut self) -> Option<(sse::Event, Self)> {
        if let Some(first) = self.first.take() {
            return Some(self.send(first));
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
            if let Some(status) = newest.filter(|status| status.version > self.sent) {
                return Some(self.send(status));
            }
        }
    }

    fn send(mut self, status: Summary) -> (sse::Event, Self) {
        self.sent = status.version;
        self.next_at = Instant::now() + Duration::from_secs(1) / STREAM_RATE;
        let body = EventStatus::new(self.event.clone(), status, self.hold_secs);
        let data = serde_json::to_string(&body).expect("a status serializes");
        let event = sse::Data::new(data)
            .event("status")
            .id(status.version.to_string());
        (event.into(), self)
    }
}
