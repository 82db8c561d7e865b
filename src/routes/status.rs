use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::event_settings::WaitingListBody;
use super::extract::{path_event, path_order, OrderRequest, PathSegments};
use super::openapi;
use crate::actors::{EventRegistry, GetStanding, GetSummary};
use crate::booking::{EventSettings, Standing, Summary};
use crate::error::{ApiError, ErrorBody};
use crate::ids::{EventId, UserId};

/// The body of an event's status: its counts, and its holds and settings.
/// The last four are always there on the resource routes; on
/// `/api/status/{eventId}` only for an event with live holds or settings
/// other than the defaults, which answers the Node.js original's five
/// fields otherwise.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStatus {
    event_id: EventId,
    total_tickets: u32,
    booked_tickets: u32,
    /// `totalTickets - bookedTickets - heldTickets`.
    available_tickets: u32,
    waiting_list_count: usize,
    /// Tickets set aside by live holds (offers from the queue among them).
    #[serde(skip_serializing_if = "Option::is_none")]
    held_tickets: Option<u32>,
    /// New bookings, holds and places in the queue are taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    sales_open: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_list: Option<WaitingListBody>,
    /// A hold's duration, in seconds, when its request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_secs: Option<u32>,
}

impl EventStatus {
    /// The full status; `hold_secs` is the server's, for an event without its own.
    pub(super) fn new(event_id: EventId, summary: Summary, hold_secs: u32) -> Self {
        let Summary {
            settings,
            booked_tickets,
            held_tickets,
            waiting,
            ..
        } = summary;
        EventStatus {
            event_id,
            total_tickets: settings.total_tickets,
            booked_tickets,
            available_tickets: settings
                .total_tickets
                .saturating_sub(booked_tickets)
                .saturating_sub(held_tickets),
            waiting_list_count: waiting,
            held_tickets: Some(held_tickets),
            sales_open: Some(settings.sales_open),
            waiting_list: Some(settings.waiting_list.into()),
            hold_secs: Some(settings.hold_secs.unwrap_or(hold_secs)),
        }
    }

    /// As `/api/status/{eventId}` answers it: the original five fields for
    /// an event that uses none of holds and settings, else the full status.
    fn legacy(event_id: EventId, summary: Summary, hold_secs: u32) -> Self {
        let plain = summary.held_tickets == 0
            && summary.settings == EventSettings::new(summary.settings.total_tickets);
        let mut status = EventStatus::new(event_id, summary, hold_secs);
        if plain {
            (status.held_tickets, status.sales_open) = (None, None);
            (status.waiting_list, status.hold_secs) = (None, None);
        }
        status
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

impl UserStatus {
    pub(super) fn new(event_id: EventId, user_id: UserId, standing: Standing) -> Self {
        UserStatus {
            event_id,
            user_id,
            standing,
        }
    }
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
    let (event, summary, hold_secs) = read_status(&registry, &event).await?;
    Ok(HttpResponse::Ok().json(EventStatus::legacy(event, summary, hold_secs)))
}

/// `GET /api/events/{eventId}`: the full status (see `EventStatus`).
pub(super) async fn full_event_status(
    registry: web::Data<EventRegistry>,
    PathSegments(event): PathSegments<String>,
) -> Result<HttpResponse, ApiError> {
    let (event, summary, hold_secs) = read_status(&registry, &event).await?;
    Ok(HttpResponse::Ok().json(EventStatus::new(event, summary, hold_secs)))
}

/// The event of a path segment, its summary from its actor, and the
/// server's hold duration.
async fn read_status(
    registry: &EventRegistry,
    event: &str,
) -> Result<(EventId, Summary, u32), ApiError> {
    let event = path_event(event)?;
    let summary = registry.ask(&event, GetSummary).await?;
    Ok((event, summary, registry.hold_secs()))
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
    let OrderRequest { event, user } = path_order(&event, &user)?;
    let standing = registry
        .ask(
            &event,
            GetStanding {
                user: user.key().clone(),
            },
        )
        .await?;
    let standing = standing.ok_or(ApiError::BookingNotFound)?;
    Ok(HttpResponse::Ok().json(UserStatus::new(event, user, standing)))
}
