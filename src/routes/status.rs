use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::extract::PathSegments;
use super::openapi;
use crate::actors::{EventRegistry, GetSummary, GetUserStatus};
use crate::booking::UserStatus;
use crate::error::ApiError;
use crate::ids::{EventId, UserId};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventStatus {
    event_id: EventId,
    total_tickets: u32,
    booked_tickets: u32,
    available_tickets: u32,
    waiting_list_count: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserStatusBody {
    event_id: EventId,
    user_id: UserId,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
}

/// `GET /api/status/{eventId}`: ticket and waiting-list counts.
#[utoipa::path(
    get,
    path = "/api/status/{eventId}",
    tag = "events",
    params(("eventId" = openapi::EventId, Path, description = "The event")),
    responses(
        (status = 200, description = "Counts", body = openapi::EventStatus),
        (status = 404, description = "Event not found", body = openapi::Error),
        openapi::GetErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn event_status(
    registry: web::Data<EventRegistry>,
    PathSegments(event): PathSegments<String>,
) -> Result<HttpResponse, ApiError> {
    let event = EventId::parse(&event).map_err(ApiError::InvalidInput)?;
    let actor = registry.get(&event).ok_or(ApiError::EventNotFound)?;
    let summary = registry.ask(&actor, GetSummary).await?;
    Ok(HttpResponse::Ok().json(EventStatus {
        event_id: event,
        total_tickets: summary.total_tickets,
        booked_tickets: summary.booked_tickets,
        available_tickets: summary.total_tickets.saturating_sub(summary.booked_tickets),
        waiting_list_count: summary.waiting,
    }))
}

/// `GET /api/status/{eventId}/{userId}`: one user's standing at the event.
#[utoipa::path(
    get,
    path = "/api/status/{eventId}/{userId}",
    tag = "bookings",
    params(
        ("eventId" = openapi::EventId, Path, description = "The event"),
        ("userId" = openapi::UserId, Path, description = "The user, percent-encoded"),
    ),
    responses(
        (status = 200, description = "The user's standing", body = openapi::UserStatus),
        (status = 404, description = "Event or booking not found", body = openapi::Error),
        openapi::GetErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn user_status(
    registry: web::Data<EventRegistry>,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let event = EventId::parse(&event).map_err(ApiError::InvalidInput)?;
    let user = UserId::parse(&user).map_err(ApiError::InvalidInput)?;
    let actor = registry.get(&event).ok_or(ApiError::EventNotFound)?;
    let standing = registry
        .ask(
            &actor,
            GetUserStatus {
                user: user.key().clone(),
            },
        )
        .await?;
    let (status, position) = match standing.ok_or(ApiError::BookingNotFound)? {
        UserStatus::Booked => ("booked", None),
        UserStatus::Waiting { position } => ("waiting", Some(position)),
        UserStatus::Cancelled => ("cancelled", None),
    };
    Ok(HttpResponse::Ok().json(UserStatusBody {
        event_id: event,
        user_id: user,
        status,
        position,
    }))
}
