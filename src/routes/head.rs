//! `HEAD` wherever there is `GET` ([RFC 9110, section
//! 9.3.2](https://www.rfc-editor.org/rfc/rfc9110#section-9.3.2)): uptime
//! checkers and some proxies probe with it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::Error;

/// Middleware, before routing: a `HEAD` request is routed and answered as
/// the `GET` it asks about, so that it gets the same status and headers
/// from the same handler, for every route now and later. actix-http's
/// HTTP/1 codec marked the request as `HEAD` when it parsed it and sends no
/// body for it (`Content-Length` still says what `GET` would send).
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}
