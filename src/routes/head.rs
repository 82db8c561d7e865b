//! `HEAD` wherever there is `GET` ([RFC 9110, section
//! 9.3.2](https://www.rfc-editor.org/rfc/rfc9110#section-9.3.2)): uptime
//! checkers and some proxies probe with it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::Error;

/// Middleware, before routing: a `HEAD` request is routed and answered as
/// the `GET` it asks about, so that it gets the same status and headers
/// from the same handler, for every route now and later; then its body is
/// dropped, and only its length kept for `Content-Length`.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, Omitted>>, Error> {
    let head = req.method() == Method::HEAD;
    if head {
        req.head_mut().method = Method::GET;
    }
    let response = next.call(req).await?;
    Ok(match head {
        false => response.map_into_left_body(),
        true => response.map_body(|_, body| EitherBody::right(Omitted(body.size()))),
    })
}

/// The body of a `HEAD` answer: the size of the `GET`'s, and no bytes.
/// actix-http leaves out the body of an answer to a request it parsed as
/// `HEAD`, but decides that when it parses the next request on the
/// connection: a client that pipelines a `GET` after a `HEAD` would get the
/// `GET`'s body after the `HEAD`'s head, and read it as the next answer.
/// Without bytes to send, that connection is closed there instead.
pub struct Omitted(BodySize);

impl MessageBody for Omitted {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        self.0
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}
