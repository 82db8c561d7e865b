use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::extract::{OrderRequest, Valid};
use super::forward;
use crate::actors::{Book, EventRegistry};
use crate::booking::BookOutcome;
use crate::error::ApiError;
use crate::ids::UserId;

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum Booked {
    Booked {
        #[serde(rename = "userId")]
        user_id: UserId,
    },
    Waiting {
        #[serde(rename = "userId")]
        user_id: UserId,
        position: u64,
    },
}

/// `POST /api/book`: a ticket, or a place on the waiting list when sold out.
pub async fn book(
    registry: web::Data<EventRegistry>,
    Valid(request): Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = registry
        .get(&request.event)
        .ok_or(ApiError::EventNotFound)?;
    let user = request.user.key().clone();
    let outcome = forward(&actor, |reply| Book { user, reply }).await?;
    let user_id = request.user;
    Ok(HttpResponse::Ok().json(match outcome {
        BookOutcome::Booked => Booked::Booked { user_id },
        BookOutcome::Waiting { position } => Booked::Waiting { user_id, position },
    }))
}
