use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{OrderRequest, Valid};
use super::openapi;
use super::order::{failure, order, success, OrderMessage};
use crate::actors::{Cancel, EventRegistry, QueueSlot, Recorder, Reply};
use crate::booking::{CancelOutcome, Refusal};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{Answer, Idempotency};
use crate::ids::{UserId, UserKey};

/// The body of a cancellation's `200`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum CancelResponse<'a> {
    /// The ticket is back on sale, or the waiting place is given up; or
    /// (an event in `offer` mode) the ticket is offered to `offeredTo`, the
    /// head of the queue.
    Cancelled {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
        #[serde(rename = "offeredTo", skip_serializing_if = "Option::is_none")]
        offered_to: Option<UserId>,
    },
    /// The ticket went to the head of the queue.
    Reassigned {
        /// The new holder of the ticket, as in the Node.js original.
        #[serde(rename = "userId")]
        user_id: UserId,
        /// The user who cancelled.
        #[serde(rename = "cancelledUserId")]
        cancelled_user_id: &'a UserId,
    },
}

impl OrderMessage for Cancel {
    type Outcome = CancelOutcome;

    type Args = ();

    fn new(
        user: UserKey,
        (): (),
        reply: Reply<CancelOutcome>,
        recorder: Option<Recorder<CancelOutcome, Refusal>>,
        slot: QueueSlot,
    ) -> Self {
        Cancel {
            user,
            reply,
            recorder,
            slot,
        }
    }

    fn answer(user: &UserId, decided: Result<&CancelOutcome, Refusal>) -> Answer {
        match decided {
            Ok(CancelOutcome::Cancelled) => success(
                StatusCode::OK,
                &CancelResponse::Cancelled {
                    user_id: user,
                    offered_to: None,
                },
            ),
            Ok(CancelOutcome::Offered { to }) => success(
                StatusCode::OK,
                &CancelResponse::Cancelled {
                    user_id: user,
                    offered_to: Some(UserId::stored(to.clone())),
                },
            ),
            Ok(CancelOutcome::Reassigned { to }) => {
                let reassigned = CancelResponse::Reassigned {
                    user_id: UserId::stored(to.clone()),
                    cancelled_user_id: user,
                };
                success(StatusCode::OK, &reassigned)
            }
            Err(refusal) => failure(&refusal.into()),
        }
    }
}

/// `POST /api/cancel`: gives up a ticket (to the head of the queue) or a waiting place.
#[utoipa::path(
    post,
    path = "/api/cancel",
    tag = "bookings",
    request_body = OrderRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Cancelled (ticket back on sale, or place left), or reassigned to the head of the queue", body = CancelResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event or booking not found (`event_not_found`, `booking_not_found`)", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn cancel(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    Valid(request, sent): Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    order::<Cancel>(&registry, &idempotency, &req, request, (), &sent, None).await
}
