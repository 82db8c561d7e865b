//! The resource routes of events: `POST /api/events` creates one (as
//! `initialize` does, with its `Location`), `GET /api/events` lists them in
//! creation order a page at a time, and `GET /api/events/{eventId}` is the
//! event's status (as `GET /api/status/{eventId}`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{InitializeRequest, PathSegments, Valid};
use super::initialize::{create, InitializeResponse};
use super::openapi;
use super::page::EventsQuery;
use super::status::{full_event_status, EventStatus};
use crate::actors::EventRegistry;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Idempotency;
use crate::ids::EventId;
use crate::storage::Database;

/// `POST /api/events`: creates an event; 201 once it is stored, with its `Location`.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body = InitializeRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 201, description = "Event created", body = InitializeResponse, headers(
            ("Location" = String, description = "`/api/events/{eventId}`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"),
        )),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 403, description = "A client key on this admin route (`forbidden`)", body = ErrorBody),
        (status = 409, description = "The event exists (`event_exists`), or the same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_event(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    Valid(request, sent): Valid<InitializeRequest>,
) -> Result<HttpResponse, ApiError> {
    create(&registry, &idempotency, &req, request, &sent, true).await
}

/// `GET /api/events/{eventId}`: ticket and waiting-list counts.
#[utoipa::path(
    get,
    path = "/api/events/{eventId}",
    tag = "events",
    params(("eventId" = EventId, Path, description = "The event")),
    responses(
        (status = 200, description = "Counts", body = EventStatus),
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn get_event(
    registry: web::Data<EventRegistry>,
    event: PathSegments<String>,
) -> Result<HttpResponse, ApiError> {
    full_event_status(registry, event).await
}

/// One page of `GET /api/events`.
#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    /// In creation order, with their counts as of their last committed change.
    events: Vec<EventStatus>,
    /// The `after` of the next page; `null` on the last one.
    next: Option<String>,
}

/// `GET /api/events`: every event, in creation order, a page at a time.
/// The counts are read from the database, for events in memory and not
/// alike, without reading any of them into memory. Paging visits every
/// event once, events created meanwhile at the end.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn list_events(
    database: web::Data<Database>,
    registry: web::Data<EventRegistry>,
    web::Query(page): web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = (page.limit()?, page.after()?);
    let read = web::block(move || database.list_events(after, limit as u32 + 1)).await;
    let mut events = match read {
        Ok(Ok(events)) => events,
        Ok(Err(error)) => {
            log::error!("listing events failed: {error}");
            return Err(ApiError::StorageUnavailable);
        }
        Err(_) => return Err(ApiError::ServiceUnavailable),
    };
    let next = (events.len() > limit).then(|| events[limit - 1].created.to_string());
    events.truncate(limit);
    let events = events
        .into_iter()
        .map(|event| {
            let summary = event.summary();
            EventStatus::new(event.id, summary, registry.hold_secs())
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventsPage { events, next }))
}
