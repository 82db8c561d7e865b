use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::extract::{InitializeRequest, Valid};
use crate::actors::EventRegistry;
use crate::error::ApiError;
use crate::ids::EventId;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Initialized {
    message: &'static str,
    event_id: EventId,
    total_tickets: u32,
}

/// `POST /api/initialize`: creates an event; 201 once it is stored.
pub async fn initialize(
    registry: web::Data<EventRegistry>,
    Valid(request): Valid<InitializeRequest>,
) -> Result<HttpResponse, ApiError> {
    let InitializeRequest {
        event,
        total_tickets,
    } = request;
    // A task of its own, so that a client hanging up cannot interrupt it half-way.
    let id = event.clone();
    let created = actix_web::rt::spawn(async move { registry.initialize(id, total_tickets).await })
        .await
        .map_err(|_| ApiError::ServiceUnavailable)?;
    created?;
    Ok(HttpResponse::Created().json(Initialized {
        message: "Event initialized",
        event_id: event,
        total_tickets,
    }))
}
