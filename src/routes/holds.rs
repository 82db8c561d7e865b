//! The holds of an event's tickets: `POST .../holds` sets a ticket aside
//! for a user while they pay (or gives a place in the queue when none is
//! free, as a booking would), `POST .../holds/{userId}/confirm` turns it into
//! a booking, `DELETE .../holds/{userId}` gives it up. A hold neither
//! confirmed nor released lapses at its `expiresAt` by itself: the event's
//! actor decides that (see `actors::event`). All three go through `order`,
//! like book and cancel.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::book::BookResponse;
use super::extract::{
    field, path_event, path_order, FromJsonObject, OrderRequest, PathSegments, Valid,
};
use super::openapi;
use super::order::{failure, order, success, Location, OrderMessage};
use super::status::{user_status, UserStatus};
use crate::actors::{ConfirmHold, EventRegistry, Hold, QueueSlot, Recorder, ReleaseHold, Reply};
use crate::booking::{CancelOutcome, HoldOutcome, Refusal, UtcMillis};
use crate::configuration::MAX_HOLD_SECS;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::{Answer, Idempotency};
use crate::ids::{whole_number_from_json, EventId, UserId, UserKey};

/// The body of `POST /api/events/{eventId}/holds`.
#[derive(ToSchema)]
pub struct HoldRequest {
    #[schema(rename = "userId")]
    user: UserId,
    /// Seconds the ticket is held, 1 to 86400; absent or `null`: the
    /// event's `holdSecs`, else the server's `hold_secs` (600 unless configured).
    #[schema(rename = "holdSecs", minimum = 1, maximum = 86400)]
    hold_secs: Option<u32>,
}

impl FromJsonObject for HoldRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let user = UserId::from_json(field(object, "userId")?).map_err(ApiError::InvalidInput)?;
        let hold_secs = match object.get("holdSecs") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let secs = whole_number_from_json("holdSecs", value, 1, MAX_HOLD_SECS.into())
                    .map_err(ApiError::InvalidInput)?;
                Some(secs as u32)
            }
        };
        Ok(HoldRequest { user, hold_secs })
    }
}

/// The body of a hold's answer: the ticket set aside, or (`200`) a place
/// in the queue when none was free.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum HoldResponse<'a> {
    Held {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
        /// When the hold lapses unless confirmed: RFC 3339, UTC.
        #[serde(rename = "expiresAt")]
        #[schema(value_type = String, format = DateTime)]
        expires_at: UtcMillis,
    },
    Waiting {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
        /// 1-based place in the waiting list.
        #[schema(minimum = 1)]
        position: u64,
    },
}

/// The body of a release's `200`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ReleaseResponse<'a> {
    /// The ticket went to the head of the queue, or back on sale.
    Released {
        #[serde(rename = "userId")]
        user_id: &'a UserId,
    },
}

/// An operation on a hold, in a request's fingerprint: one key reused for
/// another operation on the same user is refused (422), not replayed.
fn canonical(operation: &str, request: &OrderRequest, hold_secs: Option<u32>) -> Vec<u8> {
    let fields = json!({
        "operation": operation,
        "eventId": request.event,
        "userId": request.user.key().as_str(),
        "holdSecs": hold_secs,
    });
    serde_json::to_vec(&fields).expect("ids serialize")
}

impl OrderMessage for Hold {
    type Outcome = HoldOutcome;
    type Args = Option<u32>;
    const CREATES: bool = false;

    fn new(
        user: UserKey,
        hold_secs: Option<u32>,
        reply: Reply<HoldOutcome>,
        recorder: Option<Recorder<HoldOutcome, Refusal>>,
        slot: QueueSlot,
    ) -> Self {
        Hold {
            user,
            hold_secs,
            reply,
            recorder,
            slot,
        }
    }

    fn canonical(request: &OrderRequest, hold_secs: &Option<u32>) -> Vec<u8> {
        canonical("hold", request, *hold_secs)
    }

    fn answer(user: &UserId, decided: Result<&HoldOutcome, Refusal>) -> Answer {
        match decided {
            Ok(&HoldOutcome::Held { expires_at }) => success(
                StatusCode::CREATED,
                &HoldResponse::Held {
                    user_id: user,
                    expires_at,
                },
            ),
            Ok(&HoldOutcome::Waiting { position }) => success(
                StatusCode::OK,
                &HoldResponse::Waiting {
                    user_id: user,
                    position,
                },
            ),
            Err(refusal) => failure(&refusal.into()),
        }
    }
}

impl OrderMessage for ConfirmHold {
    type Outcome = ();
    type Args = ();

    fn new(
        user: UserKey,
        (): (),
        reply: Reply<()>,
        recorder: Option<Recorder<(), Refusal>>,
        slot: QueueSlot,
    ) -> Self {
        ConfirmHold {
            user,
            reply,
            recorder,
            slot,
        }
    }

    fn canonical(request: &OrderRequest, (): &()) -> Vec<u8> {
        canonical("confirm", request, None)
    }

    fn answer(user: &UserId, decided: Result<&(), Refusal>) -> Answer {
        match decided {
            Ok(()) => success(StatusCode::OK, &BookResponse::Booked { user_id: user }),
            Err(refusal) => failure(&refusal.into()),
        }
    }
}

impl OrderMessage for ReleaseHold {
    type Outcome = CancelOutcome;
    type Args = ();

    fn new(
        user: UserKey,
        (): (),
        reply: Reply<CancelOutcome>,
        recorder: Option<Recorder<CancelOutcome, Refusal>>,
        slot: QueueSlot,
    ) -> Self {
        ReleaseHold {
            user,
            reply,
            recorder,
            slot,
        }
    }

    fn canonical(request: &OrderRequest, (): &()) -> Vec<u8> {
        canonical("release", request, None)
    }

    fn answer(user: &UserId, decided: Result<&CancelOutcome, Refusal>) -> Answer {
        match decided {
            // Where the ticket went is the queue's business: the holder hears it is released.
            Ok(_) => success(StatusCode::OK, &ReleaseResponse::Released { user_id: user }),
            Err(refusal) => failure(&refusal.into()),
        }
    }
}

/// `POST /api/events/{eventId}/holds`: sets a ticket aside for the user
/// until `expiresAt`; when none is free, a place in the waiting list.
#[utoipa::path(
    post,
    path = "/api/events/{eventId}/holds",
    tag = "holds",
    params(("eventId" = EventId, Path, description = "The event"), openapi::IdempotencyKey),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Held until `expiresAt`", body = HoldResponse, headers(
            ("Location" = String, description = "`/api/events/{eventId}/holds/{userId}`, the user percent-encoded"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"),
        )),
        (status = 200, description = "No ticket free (each is booked or held): on the waiting list (`status` `waiting`)", body = HoldResponse),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        (status = 409, description = "The user already has a ticket, a hold or a waiting place (`already_booked`, `already_holding`, `already_waiting`), the event's sales are closed (`sales_closed`), or the same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn create_hold(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments(event): PathSegments<String>,
    Valid(HoldRequest { user, hold_secs }, sent): Valid<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let event = path_event(&event)?;
    let location = Location::hold(&event, &user);
    let request = OrderRequest { event, user };
    order::<Hold>(
        &registry,
        &idempotency,
        &req,
        request,
        hold_secs,
        &sent,
        Some(location),
    )
    .await
}

/// `POST /api/events/{eventId}/holds/{userId}/confirm`: the held ticket becomes a booking.
#[utoipa::path(
    post,
    path = "/api/events/{eventId}/holds/{userId}/confirm",
    tag = "holds",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
        openapi::IdempotencyKey,
    ),
    responses(
        (status = 200, description = "Booked", body = BookResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event not found (`event_not_found`), or no live hold: never held, released, or lapsed (`hold_not_found`)", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn confirm_hold(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let request = path_order(&event, &user)?;
    order::<ConfirmHold>(&registry, &idempotency, &req, request, (), &[], None).await
}

/// `DELETE /api/events/{eventId}/holds/{userId}`: gives the held ticket up,
/// to the head of the queue, else back on sale.
#[utoipa::path(
    delete,
    path = "/api/events/{eventId}/holds/{userId}",
    tag = "holds",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
        openapi::IdempotencyKey,
    ),
    responses(
        (status = 200, description = "Released", body = ReleaseResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 404, description = "Event not found (`event_not_found`), or no live hold: never held, released, or lapsed (`hold_not_found`)", body = ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn release_hold(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments((event, user)): PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let request = path_order(&event, &user)?;
    order::<ReleaseHold>(&registry, &idempotency, &req, request, (), &[], None).await
}

/// `GET /api/events/{eventId}/holds/{userId}`, where a hold's `Location`
/// points: the user's standing, as `GET .../bookings/{userId}` answers it
/// (`held` with `expiresAt` while the hold lives; then `booked`,
/// `cancelled` or `expired`).
#[utoipa::path(
    get,
    path = "/api/events/{eventId}/holds/{userId}",
    tag = "holds",
    params(
        ("eventId" = EventId, Path, description = "The event"),
        ("userId" = UserId, Path, description = "The user, percent-encoded"),
    ),
    responses(
        (status = 200, description = "The user's standing", body = UserStatus),
        (status = 404, description = "Event or user not found (`event_not_found`, `booking_not_found`)", body = ErrorBody),
        openapi::GetErrors,
        openapi::AccessErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn get_hold(
    registry: web::Data<EventRegistry>,
    path: PathSegments<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    user_status(registry, path).await
}
