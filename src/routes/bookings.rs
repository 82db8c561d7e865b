//! The resource routes of one event's bookings: `POST .../bookings` books
//! (as `/api/book` does, answering `201` with the booking's `Location`),
//! `DELETE .../bookings/{userId}` cancels (as `/api/cancel`), `GET
//! .../bookings/{userId}` is the user's standing (as
//! `/api/status/{eventId}/{userId}`), and `GET .../waiting-list` pages
//! through the queue. Book and cancel go through `order`, like the old
//! routes: one implementation per operation.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::book::BookResponse;
use super::cancel::CancelResponse;
use super::extract::{
    field, path_event, path_order, FromJsonObject, OrderRequest, PathSegments, Valid,
};
use super::openapi;
use super::order::{order, Location};
use super::page::{waiting_cursor, WaitingListQuery};
use super::status::{user_status, UserStatus};
use crate::actors::{Book, Cancel, EventRegistry, GetWaitingList};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Idempotency;
use crate::ids::{EventId, UserId};

/// The body of `POST /api/events/{eventId}/bookings`: the event is in the path.
#[derive(ToSchema)]
pub struct BookingRequest {
    #[schema(rename = "userId")]
    user: UserId,
}

impl FromJsonObject for BookingRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let user = UserId::from_json(field(object, "userId")?).map_err(ApiError::InvalidInput)?;
        Ok(BookingRequest { user })
    }
}

/// `POST /api/events/{eventId}/bookings`: a ticket, or a place on the
/// waiting list when sold out; 201 with the booking's `Location` either way.
#[utoipa::path(
    post,
    path = "/api/events/{eventId}/bookings",
    tag = "bookings",
    params(("eventId" = EventId, Path, description = "The event"), openapi::IdempotencyKey),
    request_body = BookingRequest,
    responses(
        (status = 201, description = "Booked, or on the waiting list when sold out", body = BookResponse, headers(
            ("Location" = String, description = "`/api/events/{eventId}/bookings/{userId}`, the user percent-encoded"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"),
        )),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        (status = 409, description = "The user already has a ticket, a hold or a waiting place (`already_booked`, `already_holding`, `already_waiting`), the event's sales are closed (`sales_closed`), or the same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_booking(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments(event): PathSegments<String>,
    Valid(BookingRequest { user }, sent): Valid<BookingRequest>,
) -> Result<HttpResponse, ApiError> {
    let event = path_event(&event)?;
    let location = Location::booking(&event, &user);
    let request = OrderRequest { event, user };
    order::<Book>(
        &registry,
        &idempotency,
        &req,
        request,
        (),
        &sent,
        Some(location),
    )
    .await
}

/// `DELETE /api/events/{eventId}/bookings/{userId}`: gives up a ticket (to
/// the head of the queue) or a waiting place.
#[utoipa::path(
    delete,
    path = "/api/events/{eventId}/bookings/{userId}",
    tag = "bookings",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
        openapi::IdempotencyKey,
    ),
    responses(
        (status = 200, description = "Cancelled (ticket back on sale, or place left), or reassigned to the head of the queue", body = CancelResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event or booking not found (`event_not_found`, `booking_not_found`)", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn delete_booking(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let request = path_order(&event, &user)?;
    order::<Cancel>(&registry, &idempotency, &req, request, (), &[], None).await
}

/// `GET /api/events/{eventId}/bookings/{userId}`: one user's standing at the event.
#[utoipa::path(
    get,
    path = "/api/events/{eventId}/bookings/{userId}",
    tag = "bookings",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
    ),
    responses(
        (status = 200, description = "The user's standing", body = UserStatus),
        (status = 404, description = "Event or booking not found (`event_not_found`, `booking_not_found`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn get_booking(
    registry: web::Data<EventRegistry>,
    path: PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    user_status(registry, path).await
}

/// One user of a waiting-list page.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingEntry {
    user_id: UserId,
    /// 1-based place in the waiting list.
    #[schema(minimum = 1)]
    position: u64,
}

/// One page of `GET /api/events/{eventId}/waiting-list`.
#[derive(Serialize, ToSchema)]
pub struct WaitingListPage {
    /// In queue order, head first.
    waiting: Vec<WaitingEntry>,
    /// The `after` of the next page; `null` on the last one.
    next: Option<String>,
}

/// `GET /api/events/{eventId}/waiting-list`: the queue, head first, a page
/// at a time. A page starts right after the last entry of the page before,
/// even if that user left the queue meanwhile: nobody is skipped or listed
/// twice as the queue moves (see `EventState::waiting_page`).
#[utoipa::path(
    get,
    path = "/api/events/{eventId}/waiting-list",
    tag = "bookings",
    params(("eventId" = EventId, Path, description = "The event"), WaitingListQuery),
    responses(
        (status = 200, description = "A page of the waiting list", body = WaitingListPage),
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn waiting_list(
    registry: web::Data<EventRegistry>,
    PathSegments(event): PathSegments<String>,
    web::Query(page): web::Query<WaitingListQuery>,
) -> Result<HttpResponse, ApiError> {
    let event = path_event(&event)?;
    let (limit, after) = (page.limit()?, page.after()?);
    let page = registry
        .ask(&event, GetWaitingList { after, limit })
        .await?;
    let next = page.next.as_ref().map(waiting_cursor);
    let waiting = page
        .entries
        .into_iter()
        .map(|(user, position)| WaitingEntry {
            user_id: UserId::stored(user),
            position,
        })
        .collect();
    Ok(HttpResponse::Ok().json(WaitingListPage { waiting, next }))
}
