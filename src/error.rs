//! The one error shape on the wire: `{"error": "...", "details": "..."}`.

use actix::MailboxError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::{BookingError, InitializeError};
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
    #[error("Not found")]
    RouteNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
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
            ApiError::StorageUnavailable | ApiError::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            ApiError::InvalidInput(details) | ApiError::PayloadTooLarge(details) => {
                Some(details.as_str())
            }
            _ => None,
        };
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.to_string(),
            details,
        })
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
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
        }
    }
}

impl From<InitializeError> for ApiError {
    fn from(error: InitializeError) -> Self {
        match error {
            InitializeError::AlreadyInitialized => ApiError::EventAlreadyInitialized,
            InitializeError::StorageUnavailable => ApiError::StorageUnavailable,
        }
    }
}

impl From<MailboxError> for ApiError {
    fn from(error: MailboxError) -> Self {
        log::warn!("an event actor did not answer: {error}");
        ApiError::ServiceUnavailable
    }
}
