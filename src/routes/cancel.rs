use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::extract::{OrderRequest, Valid};
use super::openapi;
use super::order::{failure, order, success};
use crate::actors::{Cancel, EventRegistry};
use crate::booking::{CancelOutcome, Refusal};
use crate::error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::ids::UserId;

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum Cancelled<'a> {
    Cancelled {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
    },
    /// As in the Node.js original, `userId` is the new holder of the ticket.
    Reassigned {
        #[serde(rename = "userId")]
        user_id: UserId,
        #[serde(rename = "cancelledUserId")]
        cancelled_user_id: &'a UserId,
    },
}

/// The answer to a cancellation by `user`: the response body, or the stored one.
fn answer(user: &UserId, decided: Result<&CancelOutcome, Refusal>) -> Answer {
    match decided {
        Ok(CancelOutcome::Cancelled) => {
            success(StatusCode::OK, &Cancelled::Cancelled { user_id: user })
        }
        Ok(CancelOutcome::Reassigned { to }) => {
            let reassigned = Cancelled::Reassigned {
                user_id: UserId::stored(to.clone()),
                cancelled_user_id: user,
            };
            success(StatusCode::OK, &reassigned)
        }
        Err(refusal) => failure(&refusal.into()),
    }
}

/// `POST /api/cancel`: gives up a ticket (to the head of the queue) or a waiting place.
#[utoipa::path(
    post,
    path = "/api/cancel",
    tag = "bookings",
    request_body = openapi::OrderRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Cancelled (ticket back on sale, or place left), or reassigned to the head of the queue", body = openapi::CancelAnswer, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        (status = 404, description = "Event or booking not found", body = openapi::Error),
        (status = 409, description = "The same Idempotency-Key is still in flight", body = openapi::Error),
    ),
    security((), ("bearer" = []))
)]
pub async fn cancel(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    request: Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let message = |user, reply, recorder, slot| Cancel {
        user,
        reply,
        recorder,
        slot,
    };
    order(&registry, &idempotency, &req, request, answer, message).await
}
