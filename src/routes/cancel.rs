use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::extract::{OrderRequest, Valid};
use super::forward;
use crate::actors::{Cancel, EventRegistry};
use crate::booking::CancelOutcome;
use crate::error::ApiError;
use crate::ids::UserId;

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum Cancelled {
    Cancelled {
        #[serde(rename = "userId")]
        user_id: UserId,
    },
    /// As in the Node.js original, `userId` is the new holder of the ticket.
    Reassigned {
        #[serde(rename = "userId")]
        user_id: UserId,
        #[serde(rename = "cancelledUserId")]
        cancelled_user_id: UserId,
    },
}

/// `POST /api/cancel`: gives up a ticket (to the head of the queue) or a waiting place.
pub async fn cancel(
    registry: web::Data<EventRegistry>,
    Valid(request): Valid<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = registry
        .get(&request.event)
        .ok_or(ApiError::EventNotFound)?;
    let user = request.user.key().clone();
    let outcome = forward(&actor, |reply| Cancel { user, reply }).await?;
    Ok(HttpResponse::Ok().json(match outcome {
        CancelOutcome::Cancelled => Cancelled::Cancelled {
            user_id: request.user,
        },
        CancelOutcome::Reassigned { to } => Cancelled::Reassigned {
            user_id: UserId::from(to),
            cancelled_user_id: request.user,
        },
    }))
}
