//! The safety net of the one error shape: an error answer that is not JSON
//! yet (one that actix-web or a middleware such as CORS made itself) is
//! rewritten as `{"error": "...", "code": "...", "details": "..."}`, keeping its status and
//! headers. The API's own errors are JSON already and pass through untouched.

use actix_web::body::{self, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, HttpResponseBuilder, ResponseError};

use crate::error::{ApiError, ErrorBody, ErrorCode};

/// Middleware, outermost: it also sees the errors of the middleware inside it.
pub async fn json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, Error> {
    // No clone of the request may live across this call: the router needs it to itself.
    let response = match next.call(req).await {
        Ok(response) => response,
        Err(error) if error.as_error::<ApiError>().is_some() => return Err(error),
        Err(error) => return Err(Rewritten::of(&error).into()),
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return Ok(response.map_into_left_body());
    }
    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let text = body::to_bytes_limited(body, 4096)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut rebuilt = HttpResponse::build(status);
    for (name, value) in head
        .headers()
        .iter()
        .filter(|(name, _)| ![CONTENT_TYPE, CONTENT_LENGTH].contains(name))
    {
        rebuilt.append_header((name.clone(), value.clone()));
    }
    let rewritten = Rewritten {
        status,
        details: String::from_utf8_lossy(&text).trim().to_string(),
    };
    Ok(ServiceResponse::new(request, rewritten.respond(rebuilt)).map_into_right_body())
}

/// An error that was not in the API's shape, with its status and text kept.
#[derive(Debug, thiserror::Error)]
#[error("{details}")]
struct Rewritten {
    status: StatusCode,
    details: String,
}

impl Rewritten {
    fn of(error: &Error) -> Self {
        Rewritten {
            status: error.as_response_error().status_code(),
            details: error.to_string(),
        }
    }

    fn respond(&self, mut response: HttpResponseBuilder) -> HttpResponse {
        let error = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let details = Some(self.details.as_str()).filter(|details| !details.is_empty());
        response.json(ErrorBody {
            error,
            code: ErrorCode::of_status(self.status),
            details,
        })
    }
}

impl ResponseError for Rewritten {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.respond(HttpResponse::build(self.status))
    }
}
