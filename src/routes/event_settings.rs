//! An event's settings on the wire: read from the body of a creation
//! (`POST /api/events`, `/api/initialize`) or of `PATCH /api/events/{eventId}`
//! (admin), which changes them through the event's actor (`Configure`): more
//! tickets go to the head of the queue in the same commit, fewer than are
//! booked and held are refused (`409 Capacity below tickets taken`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::extract::{path_event, FromJsonObject, PathSegments, Valid};
use super::openapi;
use super::order::{begin, failure, respond, success};
use super::status::EventStatus;
use crate::actors::{BookingError, Configure, EventRegistry, Recorder};
use crate::booking::{Refusal, SettingsPatch, Summary, WaitingListMode};
use crate::configuration::MAX_HOLD_SECS;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Idempotency;
use crate::ids::{total_tickets_from_json, whole_number_from_json, EventId};

/// The longest offer from the waiting list, in seconds (a day), as a hold's.
const MAX_OFFER_SECS: u32 = MAX_HOLD_SECS;

/// An event's waiting-list mode on the wire: `{"mode": "assign"}` (the
/// head of the queue is booked at once) or `{"mode": "offer", "offerSecs":
/// 3600}` (it is offered the ticket, a hold of `offerSecs` seconds).
#[derive(Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum WaitingListBody {
    Assign,
    Offer {
        #[serde(rename = "offerSecs")]
        #[schema(minimum = 1, maximum = 86400)]
        offer_secs: u32,
    },
}

impl From<WaitingListMode> for WaitingListBody {
    fn from(mode: WaitingListMode) -> Self {
        match mode {
            WaitingListMode::Assign => WaitingListBody::Assign,
            WaitingListMode::Offer { offer_secs } => WaitingListBody::Offer { offer_secs },
        }
    }
}

/// The settings fields of a body: each optional (absent or `null`: left as
/// it is), each checked, a 400 naming the field otherwise.
pub fn settings_of(object: &Map<String, Value>) -> Result<SettingsPatch, ApiError> {
    let invalid = ApiError::InvalidInput;
    let given = |name: &str| object.get(name).filter(|value| !value.is_null());
    let total_tickets = given("totalTickets")
        .map(|value| total_tickets_from_json(value).map_err(invalid))
        .transpose()?;
    let sales_open = match given("salesOpen") {
        None => None,
        Some(Value::Bool(open)) => Some(*open),
        Some(_) => return Err(invalid("salesOpen must be true or false".into())),
    };
    let hold_secs = given("holdSecs")
        .map(|value| whole_number_from_json("holdSecs", value, 1, MAX_HOLD_SECS.into()))
        .transpose()
        .map_err(invalid)?
        .map(|secs| secs as u32);
    let waiting_list = given("waitingList").map(waiting_list_of).transpose()?;
    Ok(SettingsPatch {
        total_tickets,
        sales_open,
        waiting_list,
        hold_secs,
    })
}

/// `{"mode": "assign"}` or `{"mode": "offer", "offerSecs": 1-86400}`.
fn waiting_list_of(value: &Value) -> Result<WaitingListMode, ApiError> {
    let invalid = |why: &str| ApiError::InvalidInput(why.to_string());
    let Value::Object(object) = value else {
        return Err(invalid(
            "waitingList must be an object: {\"mode\": \"assign\"} or {\"mode\": \"offer\", \"offerSecs\": ...}",
        ));
    };
    match object.get("mode").and_then(Value::as_str) {
        Some("assign") => Ok(WaitingListMode::Assign),
        Some("offer") => {
            let secs = object
                .get("offerSecs")
                .ok_or_else(|| invalid("waitingList.offerSecs is required in offer mode"))?;
            let secs =
                whole_number_from_json("waitingList.offerSecs", secs, 1, MAX_OFFER_SECS.into())
                    .map_err(ApiError::InvalidInput)?;
            Ok(WaitingListMode::Offer {
                offer_secs: secs as u32,
            })
        }
        _ => Err(invalid("waitingList.mode must be \"assign\" or \"offer\"")),
    }
}

/// The settings of `patch` in one spelling, for an idempotent request's
/// fingerprint; only the fields given, so that a creation with none of
/// them is fingerprinted as before they existed.
pub fn canonical_settings(patch: &SettingsPatch, fields: &mut Map<String, Value>) {
    let SettingsPatch {
        total_tickets,
        sales_open,
        waiting_list,
        hold_secs,
    } = patch;
    if let Some(total) = total_tickets {
        fields.insert("totalTickets".into(), json!(total));
    }
    if let Some(open) = sales_open {
        fields.insert("salesOpen".into(), json!(open));
    }
    if let Some(mode) = waiting_list {
        fields.insert("waitingList".into(), json!(WaitingListBody::from(*mode)));
    }
    if let Some(secs) = hold_secs {
        fields.insert("holdSecs".into(), json!(secs));
    }
}

/// The body of `PATCH /api/events/{eventId}`: any of the settings, at
/// least one.
#[derive(ToSchema)]
#[schema(min_properties = 1)]
pub struct EventPatch {
    /// A new capacity, 1 to 10,000,000; not below the tickets booked and held.
    #[schema(
        rename = "totalTickets",
        minimum = 1,
        maximum = 10_000_000,
        nullable = false
    )]
    total_tickets: Option<u32>,
    /// `false`: new bookings, holds and places in the queue are refused
    /// (`409 Sales closed`); confirmations, cancellations and the queue's
    /// promotions go on.
    #[schema(rename = "salesOpen", nullable = false)]
    sales_open: Option<bool>,
    #[schema(rename = "waitingList", value_type = Option<WaitingListBody>, nullable = false)]
    waiting_list: Option<WaitingListMode>,
    /// A hold's duration when its request names none, 1 to 86400.
    #[schema(rename = "holdSecs", minimum = 1, maximum = 86400, nullable = false)]
    hold_secs: Option<u32>,
}

impl EventPatch {
    fn patch(&self) -> SettingsPatch {
        SettingsPatch {
            total_tickets: self.total_tickets,
            sales_open: self.sales_open,
            waiting_list: self.waiting_list,
            hold_secs: self.hold_secs,
        }
    }
}

impl FromJsonObject for EventPatch {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let SettingsPatch {
            total_tickets,
            sales_open,
            waiting_list,
            hold_secs,
        } = settings_of(object)?;
        let body = EventPatch {
            total_tickets,
            sales_open,
            waiting_list,
            hold_secs,
        };
        if body.patch() == SettingsPatch::default() {
            return Err(ApiError::InvalidInput(
                "give at least one of totalTickets, salesOpen, waitingList, holdSecs".into(),
            ));
        }
        Ok(body)
    }
}

/// `PATCH /api/events/{eventId}` (admin): changes the event's capacity,
/// sales, waiting-list mode or hold duration, in any combination, and
/// answers with its status once committed. More tickets go to the head of
/// the queue in the same commit (booked or offered, per the mode), then on sale.
#[utoipa::path(
    patch,
    path = "/api/events/{eventId}",
    tag = "events",
    params(("eventId" = EventId, Path, description = "The event"), openapi::IdempotencyKey),
    request_body = EventPatch,
    responses(
        (status = 200, description = "Changed: the event's status", body = EventStatus, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key"))),
        openapi::PostErrors,
        openapi::AccessErrors,
        (status = 403, description = "A client key on this admin route (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Event not found (`event_not_found`)", body = ErrorBody),
        (status = 409, description = "Fewer tickets than are booked and held (`capacity_below_tickets_taken`), or the same Idempotency-Key is still in flight (`idempotency_key_in_flight`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn update_event(
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    req: HttpRequest,
    PathSegments(event): PathSegments<String>,
    Valid(body, sent): Valid<EventPatch>,
) -> Result<HttpResponse, ApiError> {
    let event = path_event(&event)?;
    let canonical = || {
        let mut fields = Map::new();
        fields.insert("operation".into(), json!("configure"));
        fields.insert("eventId".into(), json!(event));
        canonical_settings(&body.patch(), &mut fields);
        serde_json::to_vec(&fields).expect("settings serialize")
    };
    let claim = match begin(&registry, &idempotency, &req, canonical, &sent).await? {
        Ok(claim) => claim,
        Err(replayed) => return Ok(replayed),
    };
    let hold_secs = registry.hold_secs();
    let answer = {
        let event = event.clone();
        move |decided: Result<&Summary, Refusal>| match decided {
            Ok(summary) => success(
                StatusCode::OK,
                &EventStatus::new(event.clone(), *summary, hold_secs),
            ),
            Err(refusal) => failure(&refusal.into()),
        }
    };
    if let Err(error) = Box::pin(registry.find(&event)).await {
        let error = ApiError::from(error);
        if let (Some(claim), ApiError::EventNotFound) = (claim, &error) {
            Box::pin(registry.within(registry.store_answer(claim.answer(failure(&error))))).await?;
        }
        return Err(error);
    }
    let recorder = claim.map(|claim| {
        let answer = answer.clone();
        Box::new(move |decided: Result<&Summary, Refusal>| claim.answer(answer(decided)))
            as Recorder<Summary, Refusal>
    });
    let patch = body.patch();
    let summary = registry
        .forward(&event, |reply, slot| Configure {
            patch,
            reply,
            recorder,
            slot,
        })
        .await
        .map_err(|error: BookingError| ApiError::from(error))?;
    Ok(respond(&answer(Ok(&summary))))
}
