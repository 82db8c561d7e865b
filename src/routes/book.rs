use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{OrderRequest, Valid};
use super::openapi;
use super::order::{failure, order, success, OrderMessage};
use crate::actors::{Book, EventRegistry, QueueSlot, Recorder, Reply};
use crate::booking::{BookOutcome, Refusal};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{Answer, Idempotency};
use crate::ids::{UserId, UserKey};

/// The body of a booking's `200`: a ticket, or a place in the queue.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum BookResponse<'a> {
    Booked {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
    },
    Waiting {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
        /// 1-based place in the waiting list.
        #[schema(minimum = 1)]
        position: u64,
    },
}

impl OrderMessage for Book {
    type Outcome = BookOutcome;

    type Args = ();

    fn new(
        user: UserKey,
        (): (),
        reply: Reply<BookOutcome>,
        recorder: Option<Recorder<BookOutcome, Refusal>>,
        slot: QueueSlot,
    ) -> Self {
        Book {
            user,
            reply,
            recorder,
            slot,
        }
    }

    fn answer(user: &UserId, decided: Result<&BookOutcome, Refusal>) -> Answer {
        match decided {
            Ok(BookOutcome::Booked) => {
                success(StatusCode::OK, &BookResponse::Booked { user_id: user })
            }
            Ok(&BookOutcome::Waiting { position }) => success(
                StatusCode::OK,
                &BookResponse::Waiting {
                    user_id: user,
                    position,
                },
            ),
            Err(refusal) => failure(&refusal.into()),
        }
    }
}

/// `POST /api/book`: a ticket, or a place on the waiting list when sold out.
#[utoipa::path(
    post,
    path = "/api/book",
    tag = "bookings",
    request_body = OrderRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Booked, or on the waiting list when sold out", body = BookResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        (status = 409, description = "The user already has a ticket, a hold or a waiting place (`already_booked`, `already_holding`, `already_waiting`), the event's sales are closed (`sales_closed`), or the same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn book(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    Valid(request, sent): Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    order::<Book>(&registry, &idempotency, &req, request, (), &sent, None).await
}
