//! The pipeline every route that changes something shares: an idempotent
//! request's claim or replay (`begin`), the event's actor (`order`, for book,
//! cancel and the holds' routes, whose messages implement `OrderMessage`), and one rendering of
//! each answer, sent and stored alike (`respond`, `success`, `failure`,
//! `refuse`), with the `Location` of what a resource route created.

use actix::{Handler, Message};
use actix_web::http::header::{ContentType, HeaderName, HeaderValue, LOCATION};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::extract::{Canonical, OrderRequest};
use crate::actors::{BookingError, EventActor, EventRegistry, QueueSlot, Recorder, Reply};
use crate::booking::Refusal;
use crate::error::ApiError;
use crate::idempotency::{Answer, Begin, Idempotency, KeyClaim};
use crate::ids::{EventId, UserId, UserKey};

/// The answer as it goes out, and as an idempotent request's answer is stored.
pub(super) fn respond(answer: &Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type(ContentType::json())
        .body(answer.body.clone())
}

/// A stored answer sent again to a retry.
fn replay(answer: &Answer) -> HttpResponse {
    let mut response = respond(answer);
    response.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// Where a request of a resource route puts what it creates: its success
/// answers `201 Created` with this `Location` (RFC 9110, section 15.3.2),
/// its replays included.
pub(super) struct Location(pub String);

/// What a path segment keeps as it is (RFC 3986's unreserved characters);
/// everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Location {
    /// `/api/events/{eventId}`.
    pub(super) fn event(event: &EventId) -> Self {
        Location(format!(
            "/api/events/{}",
            utf8_percent_encode(event.as_str(), SEGMENT)
        ))
    }

    /// `/api/events/{eventId}/bookings/{userId}`, the user percent-encoded.
    pub(super) fn booking(event: &EventId, user: &UserId) -> Self {
        Location::of_user(event, "bookings", user)
    }

    /// `/api/events/{eventId}/holds/{userId}`, the user percent-encoded.
    pub(super) fn hold(event: &EventId, user: &UserId) -> Self {
        Location::of_user(event, "holds", user)
    }

    fn of_user(event: &EventId, collection: &str, user: &UserId) -> Self {
        let Location(event) = Location::event(event);
        let user = utf8_percent_encode(user.key(), SEGMENT);
        Location(format!("{event}/{collection}/{user}"))
    }

    /// `answer`, a success turned into `201 Created`.
    fn created(answer: Answer) -> Answer {
        match answer.status {
            200 => Answer {
                status: StatusCode::CREATED.as_u16(),
                ..answer
            },
            _ => answer,
        }
    }

    /// `response` with this `Location`, if it says `201 Created`.
    pub(super) fn on(location: Option<&Location>, mut response: HttpResponse) -> HttpResponse {
        if let Some(Location(path)) = location {
            if response.status() == StatusCode::CREATED {
                if let Ok(value) = HeaderValue::from_str(path) {
                    response.headers_mut().insert(LOCATION, value);
                }
            }
        }
        response
    }
}

/// A success answer: `status` and the JSON of `body`.
pub(super) fn success<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    let body = serde_json::to_vec(body).expect("an answer serializes");
    Answer {
        status: status.as_u16(),
        body: body.into(),
    }
}

/// An error answer, exactly as `ApiError` sends it.
pub(super) fn failure(error: &ApiError) -> Answer {
    Answer {
        status: error.status_code().as_u16(),
        body: error.body().into(),
    }
}

/// Refuses with `error`; for an idempotent request, once the refusal is stored.
async fn refuse(
    registry: &EventRegistry,
    claim: Option<KeyClaim>,
    error: ApiError,
) -> Result<HttpResponse, ApiError> {
    if let Some(claim) = claim {
        // Boxed: a rare path, kept out of every booking's future (see `order`).
        Box::pin(registry.within(registry.store_answer(claim.answer(failure(&error))))).await?;
    }
    Err(error)
}

/// For a request with an `Idempotency-Key`: the claim to execute it with,
/// or the stored answer, read back from its row, to replay (`Err` holds the
/// ready response).
pub(super) async fn begin(
    registry: &EventRegistry,
    idempotency: &web::Data<Idempotency>,
    req: &HttpRequest,
    canonical: impl FnOnce() -> Vec<u8>,
    sent: &[u8],
) -> Result<Result<Option<KeyClaim>, HttpResponse>, ApiError> {
    Ok(match idempotency.begin(req, canonical, sent)? {
        None => Ok(None),
        Some(Begin::Execute(claim)) => {
            // A key new here may have been answered by another instance.
            let since = idempotency.cutoff();
            match Box::pin(registry.answered_elsewhere(claim.id(), since)).await? {
                None => Ok(Some(claim)),
                Some(stored) => {
                    let seq = claim.stored_elsewhere(stored)?;
                    Err(replay(&Box::pin(registry.stored_answer(seq)).await?))
                }
            }
        }
        // Boxed: a rare path, kept out of every booking's future (see `order`).
        Some(Begin::Replay { seq }) => Err(replay(&Box::pin(registry.stored_answer(seq)).await?)),
    })
}

/// A change a request asks of an event's actor, as a message, and the
/// answer its decision gets. `Book`, `Cancel`, `Hold`, `ConfirmHold` and
/// `ReleaseHold` implement it, each in its route's file, which owns its
/// wire format.
pub(super) trait OrderMessage: Message<Result = ()> + Send + Sized + 'static {
    /// What the event decides: `BookOutcome`, `CancelOutcome`, ...
    type Outcome: Send + 'static;

    /// What the request names beyond the event and the user (a hold's
    /// duration); `()` for most.
    type Args: Send + 'static;

    /// On a resource route, a success is `201 Created` at the route's
    /// `Location` (a booking); `false` where `answer` says itself whether it
    /// created something (a hold: `201`, or `200` with a place in the queue).
    const CREATES: bool = true;

    /// The message for `user`: the request waits on `reply`; `recorder`, for
    /// an idempotent request, renders the answer to store with the change;
    /// `slot` is the store's room for that change, taken at admission.
    fn new(
        user: UserKey,
        args: Self::Args,
        reply: Reply<Self::Outcome>,
        recorder: Option<Recorder<Self::Outcome, Refusal>>,
        slot: QueueSlot,
    ) -> Self;

    /// The request in one spelling, over which its `Idempotency-Key`'s
    /// fingerprint is taken (see `Canonical`).
    fn canonical(request: &OrderRequest, _args: &Self::Args) -> Vec<u8> {
        request.canonical()
    }

    /// The answer to `user`'s request, sent and stored alike.
    fn answer(user: &UserId, decided: Result<&Self::Outcome, Refusal>) -> Answer;
}

/// The path shared by every change of an event's orders, old routes and
/// resource routes: idempotency, the event's actor, the message `M` (with
/// `args`), and the answer as `M::answer` renders it, both sent and stored;
/// with a `location`, a `201 Created` is there (and a success is one, if
/// `M::CREATES`). `sent` is the body as it came (see `Idempotency::begin`).
///
/// actix boxes the future of every request, and its size is that of the
/// largest state it awaits. The rare paths it awaits (a replay, a stored
/// refusal) box their own, which keeps a booking's under 1 KB, the most
/// glibc serves from its per-thread cache (see docs/performance.md). Keep
/// new rare paths boxed too.
pub(super) async fn order<M: OrderMessage>(
    registry: &EventRegistry,
    idempotency: &web::Data<Idempotency>,
    req: &HttpRequest,
    request: OrderRequest,
    args: M::Args,
    sent: &[u8],
    location: Option<Location>,
) -> Result<HttpResponse, ApiError>
where
    EventActor: Handler<M>,
{
    let canonical = || M::canonical(&request, &args);
    let claim = match begin(registry, idempotency, req, canonical, sent).await? {
        Ok(claim) => claim,
        Err(replayed) => return Ok(Location::on(location.as_ref(), replayed)),
    };
    let creates = location.is_some() && M::CREATES;
    let answer = move |user: &UserId, decided: Result<&M::Outcome, Refusal>| match creates {
        true => Location::created(M::answer(user, decided)),
        false => M::answer(user, decided),
    };
    if !registry.is_active(&request.event) {
        // Boxed: a rare path (the event's first request in a while).
        match Box::pin(registry.find(&request.event)).await {
            Ok(()) => {}
            Err(BookingError::EventNotFound) => {
                return refuse(registry, claim, ApiError::EventNotFound).await
            }
            Err(error) => return Err(error.into()),
        }
    }
    let recorder = claim.map(|claim| {
        let user = request.user.clone();
        Box::new(move |decided: Result<&M::Outcome, Refusal>| claim.answer(answer(&user, decided)))
            as Recorder<M::Outcome, Refusal>
    });
    let user = request.user.key().clone();
    let outcome = registry
        .forward(&request.event, |reply, slot| {
            M::new(user, args, reply, recorder, slot)
        })
        .await?;
    let response = respond(&answer(&request.user, Ok(&outcome)));
    Ok(Location::on(location.as_ref(), response))
}
