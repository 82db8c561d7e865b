use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::extract::{OrderRequest, Valid};
use super::{begin, failure, forward, refuse, respond, success};
use crate::actors::{Book, EventRegistry, Recorder};
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
pub async fn book(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    Valid(request, body): Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let ticket = match begin(&idempotency, &req, &body)? {
        Ok(ticket) => ticket,
        Err(replayed) => return Ok(replayed),
    };
    let Some(actor) = registry.get(&request.event) else {
        return refuse(&registry, ticket, ApiError::EventNotFound).await;
    };
    let recorder = ticket.map(|ticket| {
        let user = request.user.clone();
        Box::new(move |decided: Result<&BookOutcome, Refusal>| {
            ticket.answer(answer(&user, decided))
        }) as Recorder<BookOutcome, Refusal>
    });
    let user = request.user.key().clone();
    let outcome = forward(&actor, |reply| Book {
        user,
        reply,
        recorder,
    })
    .await?;
    Ok(respond(&answer(&request.user, Ok(&outcome))))
}
