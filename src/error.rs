//! The one error shape on the wire: `{"error": "...", "code": "...",
//! "details": "..."}`, with a stable `code` a client can branch on.

use actix_web::http::header::{ContentType, ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

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
    EventExists,
    #[error("User already has a ticket")]
    AlreadyBooked,
    #[error("User is already on the waiting list")]
    AlreadyWaiting,
    #[error("User already holds a ticket")]
    AlreadyHolding,
    /// New bookings, holds and places in the queue are refused.
    #[error("Sales closed")]
    SalesClosed,
    /// A capacity below the tickets booked and held.
    #[error("Capacity below tickets taken")]
    CapacityBelowTaken,
    /// No live hold: never held, released, or lapsed.
    #[error("Hold not found")]
    HoldNotFound,
    /// A write was not acknowledged: not committed, or (PostgreSQL) its
    /// connection broke during the commit, which may have landed.
    #[error("Storage unavailable")]
    StorageUnavailable,
    /// An event actor could not be reached (the server is stopping).
    #[error("Service unavailable")]
    ServiceUnavailable,
    /// A queue was full: refused at once, nothing changed.
    #[error("Server busy")]
    ServerBusy,
    /// Still starting: the idempotency keys are being read (just after a start).
    #[error("Server starting")]
    ServerStarting,
    /// `max_streams` status streams are open.
    #[error("Too many streams")]
    TooManyStreams,
    /// Another instance owns the event (PostgreSQL's lock on it): nothing was changed.
    #[error("Event owned by another instance")]
    EventElsewhere,
    /// No answer in time; a book or cancel may still be stored.
    #[error("Request timed out")]
    RequestTimedOut,
    /// No API key, or an unknown one.
    #[error("Unauthorized")]
    Unauthorized,
    /// A valid key without the rights for this route.
    #[error("Forbidden")]
    Forbidden,
    #[error("Too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// A retry arrived while the first request with its key is still running.
    #[error("A request with this idempotency key is still in progress")]
    IdempotencyKeyInFlight,
    #[error("Idempotency key reused with a different request")]
    IdempotencyKeyReused,
    #[error("Not found")]
    RouteNotFound,
    /// The path exists, not with this method; `allow` lists the ones it has.
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
}

/// What went wrong, for a program to branch on: one per kind of error,
/// stable across releases, unlike the English of `error`. Serialized in
/// snake case (`event_not_found`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body, a path segment or a header is malformed; `details` names it.
    InvalidInput,
    /// 401: no API key, or an unknown one.
    Unauthorized,
    /// 403: a valid key without the rights for this route.
    Forbidden,
    /// 404: no event with this id.
    EventNotFound,
    /// 404: the user has no ticket or waiting place at the event.
    BookingNotFound,
    /// 404: the user has no live hold at the event: never held, released, or lapsed.
    HoldNotFound,
    /// 404: no route has this path.
    RouteNotFound,
    /// 405: the path exists, not with this method; `Allow` lists the ones it has.
    MethodNotAllowed,
    /// 409: the event was initialized before.
    EventExists,
    /// 409: the user already has a ticket at the event.
    AlreadyBooked,
    /// 409: the user is already on the event's waiting list.
    AlreadyWaiting,
    /// 409: the user already holds a ticket at the event (one hold per
    /// user, and no booking beside it).
    AlreadyHolding,
    /// 409: the event's sales are closed: no new booking, hold or place in the queue.
    SalesClosed,
    /// 409: a capacity below the tickets booked and held; nothing changed.
    CapacityBelowTicketsTaken,
    /// 409: the first request with this `Idempotency-Key` is still running.
    IdempotencyKeyInFlight,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 422: this `Idempotency-Key` came with a different request before.
    IdempotencyKeyReused,
    /// 429: over the rate limit; `Retry-After` says when to come back.
    RateLimited,
    /// 500: an error the server did not foresee.
    InternalError,
    /// 503: the change was not acknowledged. Nothing was changed, except
    /// where PostgreSQL's connection broke during the commit: then it may
    /// have been (the event's actor reloads what is stored).
    StorageUnavailable,
    /// 503: a queue was full; nothing was changed.
    ServerBusy,
    /// 503: still starting (the idempotency keys are being read); nothing was changed.
    ServerStarting,
    /// 503: `max_streams` status streams are open; `Retry-After` says when to try again.
    TooManyStreams,
    /// 503: another instance owns the event for now; nothing was changed.
    EventElsewhere,
    /// 503: no answer in time; a book or cancel may still be stored.
    RequestTimedOut,
    /// 503: the server is stopping.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code of an error answer that actix-web or a middleware made,
    /// known only by its status.
    pub fn of_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
            status if status.is_client_error() => ErrorCode::InvalidInput,
            _ => ErrorCode::InternalError,
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// A short English text, e.g. `Event not found`.
    pub error: String,
    pub code: ErrorCode,
    /// What is wrong, naming the field (on 400 and 413), or what to do next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::EventNotFound
            | ApiError::BookingNotFound
            | ApiError::HoldNotFound
            | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::EventExists
            | ApiError::AlreadyBooked
            | ApiError::AlreadyWaiting
            | ApiError::AlreadyHolding
            | ApiError::SalesClosed
            | ApiError::CapacityBelowTaken => StatusCode::CONFLICT,
            ApiError::StorageUnavailable
            | ApiError::ServiceUnavailable
            | ApiError::ServerBusy
            | ApiError::ServerStarting
            | ApiError::EventElsewhere
            | ApiError::TooManyStreams
            | ApiError::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => response.insert_header((WWW_AUTHENTICATE, "Bearer")),
            ApiError::RateLimited { retry_after_secs } => {
                response.insert_header((RETRY_AFTER, *retry_after_secs))
            }
            ApiError::IdempotencyKeyInFlight
            | ApiError::ServerBusy
            | ApiError::ServerStarting
            | ApiError::EventElsewhere
            | ApiError::RequestTimedOut => response.insert_header((RETRY_AFTER, 1)),
            // A stream lasts: a place frees up less often than a queue's.
            ApiError::TooManyStreams => response.insert_header((RETRY_AFTER, 5)),
            ApiError::MethodNotAllowed { allow } => response.insert_header((ALLOW, *allow)),
            _ => &mut response,
        };
        response.content_type(ContentType::json()).body(self.body())
    }
}

impl ApiError {
    /// The stable code of this error, sent as `code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidInput(_) => ErrorCode::InvalidInput,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::EventNotFound => ErrorCode::EventNotFound,
            ApiError::BookingNotFound => ErrorCode::BookingNotFound,
            ApiError::EventExists => ErrorCode::EventExists,
            ApiError::AlreadyBooked => ErrorCode::AlreadyBooked,
            ApiError::AlreadyWaiting => ErrorCode::AlreadyWaiting,
            ApiError::AlreadyHolding => ErrorCode::AlreadyHolding,
            ApiError::SalesClosed => ErrorCode::SalesClosed,
            ApiError::CapacityBelowTaken => ErrorCode::CapacityBelowTicketsTaken,
            ApiError::HoldNotFound => ErrorCode::HoldNotFound,
            ApiError::StorageUnavailable => ErrorCode::StorageUnavailable,
            ApiError::ServiceUnavailable => ErrorCode::ServiceUnavailable,
            ApiError::ServerBusy => ErrorCode::ServerBusy,
            ApiError::ServerStarting => ErrorCode::ServerStarting,
            ApiError::EventElsewhere => ErrorCode::EventElsewhere,
            ApiError::TooManyStreams => ErrorCode::TooManyStreams,
            ApiError::RequestTimedOut => ErrorCode::RequestTimedOut,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::IdempotencyKeyInFlight => ErrorCode::IdempotencyKeyInFlight,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::RouteNotFound => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
        }
    }

    /// The JSON body of this error, as sent (and stored for idempotent retries).
    pub fn body(&self) -> Vec<u8> {
        let details = match self {
            ApiError::InvalidInput(details) | ApiError::PayloadTooLarge(details) => {
                Some(details.as_str())
            }
            ApiError::ServerStarting => {
                Some("the server is still starting; nothing was changed, retry shortly")
            }
            ApiError::EventElsewhere => {
                Some("another instance decides for this event for now; nothing was changed, retry shortly")
            }
            ApiError::RequestTimedOut => Some(
                "no answer in time; a book or cancel may still be stored: check the status, or retry with the same Idempotency-Key",
            ),
            _ => None,
        };
        serde_json::to_vec(&ErrorBody {
            error: self.to_string(),
            code: self.code(),
            details,
        })
        .expect("an error body serializes")
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::AlreadyInitialized => ApiError::EventExists,
            Refusal::AlreadyBooked => ApiError::AlreadyBooked,
            Refusal::AlreadyWaiting => ApiError::AlreadyWaiting,
            Refusal::BookingNotFound => ApiError::BookingNotFound,
            Refusal::AlreadyHolding => ApiError::AlreadyHolding,
            Refusal::HoldNotFound => ApiError::HoldNotFound,
            Refusal::SalesClosed => ApiError::SalesClosed,
            Refusal::CapacityBelowTaken => ApiError::CapacityBelowTaken,
        }
    }
}

impl From<BookingError> for ApiError {
    fn from(error: BookingError) -> Self {
        match error {
            BookingError::Refused(refusal) => refusal.into(),
            BookingError::EventNotFound => ApiError::EventNotFound,
            BookingError::StorageUnavailable => ApiError::StorageUnavailable,
            BookingError::Busy => ApiError::ServerBusy,
            BookingError::TimedOut => {
                log::warn!("a request timed out waiting for its event or the store");
                ApiError::RequestTimedOut
            }
            BookingError::Stopped => ApiError::ServiceUnavailable,
            BookingError::Recovering => ApiError::ServerStarting,
            BookingError::Elsewhere => ApiError::EventElsewhere,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn every_error_body_carries_its_code_beside_its_text() {
        let all = [
            (ApiError::InvalidInput("x".into()), "invalid_input"),
            (ApiError::PayloadTooLarge("x".into()), "payload_too_large"),
            (ApiError::EventNotFound, "event_not_found"),
            (ApiError::BookingNotFound, "booking_not_found"),
            (ApiError::EventExists, "event_exists"),
            (ApiError::AlreadyBooked, "already_booked"),
            (ApiError::AlreadyWaiting, "already_waiting"),
            (ApiError::AlreadyHolding, "already_holding"),
            (ApiError::HoldNotFound, "hold_not_found"),
            (ApiError::SalesClosed, "sales_closed"),
            (ApiError::CapacityBelowTaken, "capacity_below_tickets_taken"),
            (ApiError::StorageUnavailable, "storage_unavailable"),
            (ApiError::ServiceUnavailable, "service_unavailable"),
            (ApiError::ServerBusy, "server_busy"),
            (ApiError::ServerStarting, "server_starting"),
            (ApiError::EventElsewhere, "event_elsewhere"),
            (ApiError::TooManyStreams, "too_many_streams"),
            (ApiError::RequestTimedOut, "request_timed_out"),
            (ApiError::Unauthorized, "unauthorized"),
            (ApiError::Forbidden, "forbidden"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 1,
                },
                "rate_limited",
            ),
            (
                ApiError::IdempotencyKeyInFlight,
                "idempotency_key_in_flight",
            ),
            (ApiError::IdempotencyKeyReused, "idempotency_key_reused"),
            (ApiError::RouteNotFound, "route_not_found"),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                "method_not_allowed",
            ),
        ];
        for (error, code) in &all {
            let body: Value = serde_json::from_slice(&error.body()).unwrap();
            assert_eq!(body["error"], error.to_string(), "{error:?}");
            assert_eq!(body["code"], *code, "{error:?}");
        }
    }

    #[test]
    fn an_error_known_only_by_its_status_gets_the_code_of_that_status() {
        for (status, code) in [
            (StatusCode::BAD_REQUEST, "invalid_input"),
            (StatusCode::URI_TOO_LONG, "invalid_input"),
            (StatusCode::NOT_FOUND, "route_not_found"),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (StatusCode::REQUEST_TIMEOUT, "invalid_input"),
            (StatusCode::GATEWAY_TIMEOUT, "internal_error"),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        ] {
            assert_eq!(json!(ErrorCode::of_status(status)), code, "{status}");
        }
    }
}
