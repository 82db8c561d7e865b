use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::extract::{OrderRequest, Valid};
use super::openapi;
use super::order::{failure, order, success};
use crate::actors::{Book, EventRegistry};
use crate::booking::{BookOutcome, Refusal};
use crate::error::ApiError;
use crate::idempotency::{Answer, Idempotency};
use crate::ids::UserId;

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum Booked<'a> {
    Booked {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
    },
    Waiting {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
        position: u64,
    },
}

/// The answer to a booking of `user`: the response body, or the stored one.
fn answer(user: &UserId, decided: Result<&BookOutcome, Refusal>) -> Answer {
    match decided {
        Ok(BookOutcome::Booked) => success(StatusCode::OK, &Booked::Booked { user_id: user }),
        Ok(&BookOutcome::Waiting { position }) => success(
            StatusCode::OK,
            &Booked::Waiting {
                user_id: user,
                position,
            },
        ),
        Err(refusal) => failure(&refusal.into()),
    }
}

/// `POST /api/book`: a ticket, or a place on the waiting list when sold out.
#[utoipa::path(
    post,
    path = "/api/book",
    tag = "bookings",
    request_body = openapi::OrderRequest,
    params(openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Booked, or on the waiting list when sold out", body = openapi::BookAnswer, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        (status = 404, description = "Event not found", body = openapi::Error),
        (status = 409, description = "The user already has a ticket or a waiting place, or the same Idempotency-Key is still in flight", body = openapi::Error),
    ),
    security((), ("bearer" = []))
)]
pub async fn book(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    request: Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let message = |user, reply, recorder, slot| Book {
        user,
        reply,
        recorder,
        slot,
    };
    order(&registry, &idempotency, &req, request, answer, message).await
}
