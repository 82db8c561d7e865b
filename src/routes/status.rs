use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::PathSegments;
use super::openapi;
use crate::actors::{EventRegistry, GetStanding, GetSummary};
use crate::booking::{Standing, Summary};
use crate::error::{ApiError, ErrorBody};
use crate::ids::{EventId, UserId};

/// The body of an event's status: its counts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStatus {
    event_id: EventId,
    total_tickets: u32,
    booked_tickets: u32,
    /// Tickets set aside by live holds.
    held_tickets: u32,
    /// `totalTickets - bookedTickets - heldTickets`.
    available_tickets: u32,
    waiting_list_count: usize,
}

impl EventStatus {
    pub(super) fn new(event_id: EventId, counts: Summary) -> Self {
        EventStatus {
            event_id,
            total_tickets: counts.total_tickets,
            booked_tickets: counts.booked_tickets,
            held_tickets: counts.held_tickets,
            available_tickets: counts
                .total_tickets
                .saturating_sub(counts.booked_tickets)
                .saturating_sub(counts.held_tickets),
            waiting_list_count: counts.waiting,
        }
    }
}

/// The body of a user's status: where they stand at the event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    event_id: EventId,
    user_id: UserId,
    #[serde(flatten)]
    standing: Standing,
}

/// `GET /api/status/{eventId}`: ticket and waiting-list counts.
#[utoipa::path(
    get,
    path = "/api/status/{eventId}",
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
pub async fn event_status(
    registry: web::Data<EventRegistry>,
    PathSegments(event): PathSegments<String>,
) -> Result<HttpResponse, ApiError> {
    let event = EventId::parse(&event).map_err(ApiError::InvalidInput)?;
    let summary = registry.ask(&event, GetSummary).await?;
    Ok(HttpResponse::Ok().json(EventStatus::new(event, summary)))
}

/// `GET /api/status/{eventId}/{userId}`: one user's standing at the event.
#[utoipa::path(
    get,
    path = "/api/status/{eventId}/{userId}",
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
pub async fn user_status(
    registry: web::Data<EventRegistry>,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let event = EventId::parse(&event).map_err(ApiError::InvalidInput)?;
    let user = UserId::parse(&user).map_err(ApiError::InvalidInput)?;
    let standing = registry
        .ask(
            &event,
            GetStanding {
                user: user.key().clone(),
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserStatus {
        event_id: event,
        user_id: user,
        standing: standing.ok_or(ApiError::BookingNotFound)?,
    }))
}
