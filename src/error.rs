//! The one error shape on the wire: `{"error": "...", "details": "..."}`.

use actix_web::http::header::{ContentType, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::BookingError;
use crate::booking::Refusal;

/// Every error a route answers with. The `Display` text is the `error` field.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the text says what is wrong, naming the field.
    #[error("Invalid input")]
    InvalidInput(String),
    #[error("Invalid input")]
    PayloadTooLarge(String),
    #[error("Event not found")]
    EventNotFound,
    #[error("Booking not found")]
    BookingNotFound,
    #[error("Event already initialized")]
    EventAlreadyInitialized,
    #[error("User already has a ticket")]
    AlreadyBooked,
    #[error("User is already on the waiting list")]
    AlreadyWaiting,
    /// A write was not committed; nothing of it was acknowledged.
    #[error("Storage unavailable")]
    StorageUnavailable,
    /// An event actor could not be reached (the server is stopping).
    #[error("Service unavailable")]
    ServiceUnavailable,
    /// A queue was full: refused at once, nothing changed.
    #[error("Server busy")]
    ServerBusy,
    /// The stored orders are still being read (just after a start).
    #[error("Server starting")]
    Starting,
    /// No answer in time; a book or cancel may still be stored.
    #[error("Request timed out")]
    TimedOut,
    /// No API key, or an unknown one.
    #[error("Unauthorized")]
    Unauthorized,
    /// A valid key without the rights for this route.
    #[error("Forbidden")]
    Forbidden,
    #[error("Too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A retry arrived while the first request with its key is still running.
    #[error("A request with this idempotency key is still in progress")]
    IdempotencyInFlight,
    #[error("Idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("Not found")]
    RouteNotFound,
    /// The path exists, not with this method; `allow` lists the ones it has.
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
}

/// The body of every error answer.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::EventNotFound | ApiError::BookingNotFound | ApiError::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::EventAlreadyInitialized
            | ApiError::AlreadyBooked
            | ApiError::AlreadyWaiting => StatusCode::CONFLICT,
            ApiError::StorageUnavailable
            | ApiError::ServiceUnavailable
            | ApiError::ServerBusy
            | ApiError::Starting
            | ApiError::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyInFlight => StatusCode::CONFLICT,
            ApiError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => response.insert_header((WWW_AUTHENTICATE, "Bearer")),
            ApiError::TooManyRequests { retry_after_secs } => {
                response.insert_header((RETRY_AFTER, *retry_after_secs))
            }
            ApiError::IdempotencyInFlight
            | ApiError::ServerBusy
            | ApiError::Starting
            | ApiError::TimedOut => response.insert_header((RETRY_AFTER, 1)),
            ApiError::MethodNotAllowed { allow } => response.insert_header((ALLOW, *allow)),
            _ => &mut response,
        };
        response.content_type(ContentType::json()).body(self.body())
    }
}

impl ApiError {
    /// The JSON body of this error, as sent (and stored for idempotent retries).
    pub fn body(&self) -> Vec<u8> {
        let details = match self {
            ApiError::InvalidInput(details) | ApiError::PayloadTooLarge(details) => {
                Some(details.as_str())
            }
            ApiError::Starting => {
                Some("the stored orders are still being loaded; nothing was changed, retry shortly")
            }
            ApiError::TimedOut => Some(
                "no answer in time; a book or cancel may still be stored: check the status, or retry with the same Idempotency-Key",
            ),
            _ => None,
        };
        serde_json::to_vec(&ErrorBody {
            error: self.to_string(),
            details,
        })
        .expect("an error body serializes")
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::AlreadyInitialized => ApiError::EventAlreadyInitialized,
            Refusal::AlreadyBooked => ApiError::AlreadyBooked,
            Refusal::AlreadyWaiting => ApiError::AlreadyWaiting,
            Refusal::BookingNotFound => ApiError::BookingNotFound,
        }
    }
}

impl From<BookingError> for ApiError {
    fn from(error: BookingError) -> Self {
        match error {
            BookingError::Refused(refusal) => refusal.into(),
            BookingError::StorageUnavailable => ApiError::StorageUnavailable,
            BookingError::Busy => ApiError::ServerBusy,
            BookingError::TimedOut => {
                log::warn!("a request timed out waiting for its event or the store");
                ApiError::TimedOut
            }
            BookingError::Stopped => ApiError::ServiceUnavailable,
            BookingError::Recovering => ApiError::Starting,
        }
    }
}
