use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{Canonical, InitializeRequest, Valid};
use super::openapi;
use super::order::{begin, failure, respond, success, Location};
use crate::actors::{BookingError, EventRegistry, Recorder};
use crate::booking::Refusal;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{Answer, Idempotency};
use crate::ids::EventId;

/// The body of `initialize`'s `201`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResponse<'a> {
    #[schema(example = "Event initialized")]
    message: &'static str,
    /// As sent: a string as it was, a number in canonical form (`1.0` comes back as `1`).
    #[schema(value_type = EventId)]
    event_id: &'a Value,
    total_tickets: u32,
}

/// The answer to initializing an event: the response body, or the stored one.
fn answer(event_as_sent: &Value, total_tickets: u32, created: Result<&(), Refusal>) -> Answer {
    match created {
        Ok(()) => {
            let body = InitializeResponse {
                message: "Event initialized",
                event_id: event_as_sent,
                total_tickets,
            };
            success(StatusCode::CREATED, &body)
        }
        Err(error) => failure(&error.into()),
    }
}

/// `POST /api/initialize`: creates an event; 201 once it is stored.
#[utoipa::path(
    post,
    path = "/api/initialize",
    tag = "events",
    request_body = InitializeRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 201, description = "Event initialized", body = InitializeResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 403, description = "A client key on this admin route (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Event already initialized (`event_exists`), or the same Idempotency-Key still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn initialize(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    Valid(request, sent): Valid<InitializeRequest>,
) -> Result<HttpResponse, ApiError> {
    create(&registry, &idempotency, &req, request, &sent, false).await
}

/// Creates an event, for `initialize` and for `POST /api/events`, which
/// also answers with its `Location` (`located`).
pub(super) async fn create(
    registry: &web::Data<EventRegistry>,
    idempotency: &web::Data<Idempotency>,
    req: &HttpRequest,
    request: InitializeRequest,
    sent: &[u8],
    located: bool,
) -> Result<HttpResponse, ApiError> {
    let location = located.then(|| Location::event(&request.event));
    let claim = match begin(registry, idempotency, req, || request.canonical(), sent).await? {
        Ok(claim) => claim,
        Err(replayed) => return Ok(Location::on(location.as_ref(), replayed)),
    };
    let settings = request.event_settings();
    let InitializeRequest {
        event,
        event_as_sent,
        total_tickets,
        ..
    } = request;
    let recorder = claim.map(|claim| {
        let event_as_sent = event_as_sent.clone();
        Box::new(move |created: Result<&(), Refusal>| {
            claim.answer(answer(&event_as_sent, total_tickets, created))
        }) as Recorder<(), Refusal>
    });
    // A task of its own, so that neither a client hanging up nor the time-out
    // can interrupt it half-way.
    let creating = actix_web::rt::spawn({
        let registry = registry.clone();
        async move { registry.initialize(event, settings, recorder).await }
    });
    registry
        .within(async { creating.await.unwrap_or(Err(BookingError::Stopped)) })
        .await?;
    let response = respond(&answer(&event_as_sent, total_tickets, Ok(&())));
    Ok(Location::on(location.as_ref(), response))
}
