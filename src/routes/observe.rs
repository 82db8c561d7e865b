//! Every answered request, counted and timed by route pattern (not raw path,
//! so that ids do not make a series each) and logged as one line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::Error;

use crate::telemetry;

/// Where no route matched: one series for all of them.
const UNMATCHED: &str = "unmatched";

/// Middleware, outermost: it sees the final status, error answers included.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let response = next.call(req).await?;
    let route = response.request().match_pattern();
    telemetry::request_answered(
        &method,
        route.unwrap_or_else(|| UNMATCHED.to_owned()),
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}
