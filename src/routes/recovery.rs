//! Requests for events wait while the stored events are read after a start.
//! The server listens from the first moment, so that `/health` and `/ready`
//! answer during recovery; until it is over, a known event would look unknown.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use crate::actors::EventRegistry;
use crate::error::ApiError;

/// Middleware: passes the request on once recovery is over, or answers 503
/// "Server starting" if it is not over within the request time-out.
pub async fn after_recovery(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let waited = match req.app_data::<web::Data<EventRegistry>>() {
        Some(registry) if !registry.is_recovered() => registry.recovered().await,
        _ => Ok(()),
    };
    match waited {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(error) => Ok(req
            .into_response(ApiError::from(error).error_response())
            .map_into_right_body()),
    }
}
