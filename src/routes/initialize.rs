use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::extract::{InitializeRequest, Valid};
use crate::actors::EventRegistry;
use crate::error::ApiError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Initialized {
    message: &'static str,
    event_id: Value,
    total_tickets: u32,
}

/// `POST /api/initialize`: creates an event; 201 once it is stored.
pub async fn initialize(
    registry: web::Data<EventRegistry>,
    Valid(request): Valid<InitializeRequest>,
) -> Result<HttpResponse, ApiError> {
    let InitializeRequest {
        event,
        event_as_sent,
        total_tickets,
    } = request;
    // A task of its own, so that a client hanging up cannot interrupt it half-way.
    let created =
        actix_web::rt::spawn(async move { registry.initialize(event, total_tickets).await })
            .await
            .map_err(|_| ApiError::ServiceUnavailable)?;
    created?;
    Ok(HttpResponse::Created().json(Initialized {
        message: "Event initialized",
        event_id: event_as_sent,
        total_tickets,
    }))
}
