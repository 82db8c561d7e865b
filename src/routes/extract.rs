//! Request bodies: read within the size limit, parsed as a JSON object, and
//! validated field by field; and path segments, decoded only from UTF-8. So
//! each route receives only well-formed ids.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::BytesMut;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::{ready, LocalBoxFuture, Ready};
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::event_settings::{canonical_settings, settings_of, WaitingListBody};
use super::strict_json::parse_json;
use crate::booking::{EventSettings, SettingsPatch, WaitingListMode};
use crate::error::ApiError;
use crate::ids::{total_tickets_from_json, EventId, UserId};

/// A request body type built from the fields of a JSON object.
pub trait FromJsonObject: Sized {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError>;
}

/// A request as the server reads it, in one spelling (JSON of its
/// normalized fields): the fingerprint of an idempotent request is taken
/// over this, so that a retry that differs only in how it is written
/// (member order, spaces, `1.0` for `1`, a user id not in NFC) is the same
/// request. The routes whose request is more than a body (the event or
/// user in the path, an operation) spell theirs where they call `begin`.
pub trait Canonical {
    fn canonical(&self) -> Vec<u8>;
}

/// Extracts a `T` from a JSON body, answering 400 or 413 with the reason;
/// the raw body comes along for the answers that were stored with a
/// fingerprint of it, before fingerprints were canonical (see
/// [`Idempotency::begin`](crate::idempotency::Idempotency::begin)).
pub struct Valid<T>(pub T, pub web::Bytes);

impl<T: FromJsonObject + 'static> FromRequest for Valid<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = check_content_type(req);
        let limit = req.app_data::<BodyLimit>().map_or(0, |limit| limit.0);
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
        let payload = payload.take();
        Box::pin(async move {
            content_type?;
            let too_large = || {
                ApiError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"))
            };
            if declared.is_some_and(|length| length > limit) {
                return Err(too_large());
            }
            let bytes = read_body(payload, limit)
                .await
                .map_err(|error| match error {
                    PayloadError::Overflow => too_large(),
                    error => ApiError::InvalidInput(format!(
                        "the request body could not be read: {error}"
                    )),
                })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::InvalidInput(
                    "the request body is empty; send a JSON object".into(),
                ));
            }
            match parse_json(&bytes)? {
                Value::Object(object) => {
                    T::from_object(&object).map(|request| Valid(request, bytes))
                }
                _ => Err(ApiError::InvalidInput(
                    "the request body must be a JSON object".into(),
                )),
            }
        })
    }
}

/// The whole body, or `Overflow` once it passes `limit` bytes. A body that
/// arrives in one piece, as a small JSON object usually does, is kept as that
/// piece, without a copy: actix's `Bytes` extractor would copy it into a new
/// 8 KB buffer, a block too large for glibc's per-thread cache, on every request.
async fn read_body(mut payload: Payload, limit: usize) -> Result<web::Bytes, PayloadError> {
    let mut whole = web::Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        let length = joined.as_ref().map_or(whole.len(), BytesMut::len) + chunk.len();
        if length > limit {
            return Err(PayloadError::Overflow);
        }
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&chunk),
            None if whole.is_empty() => whole = chunk,
            None => {
                let mut buffer = BytesMut::with_capacity(length);
                buffer.extend_from_slice(&whole);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

/// The segments of the request's path, as `web::Path<T>` gives them, once
/// the whole path is known to percent-decode to UTF-8. actix decodes what is
/// not UTF-8 to U+FFFD, so `%FF` and `%E9` would both name the user "\u{FFFD}".
pub struct PathSegments<T>(pub T);

impl<T: DeserializeOwned> FromRequest for PathSegments<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            if percent_decode_str(req.uri().path()).decode_utf8().is_err() {
                Err(ApiError::InvalidInput(
                    "the path is not UTF-8 once percent-decoded".into(),
                ))
            } else {
                req.match_info()
                    .load()
                    .map(PathSegments)
                    .map_err(|error| ApiError::InvalidInput(format!("the path: {error}")))
            },
        )
    }
}

/// An event id from a path segment, validated as a body's `eventId` is.
pub fn path_event(segment: &str) -> Result<EventId, ApiError> {
    EventId::parse(segment).map_err(ApiError::InvalidInput)
}

/// An event and a user from path segments, validated as a body's are.
pub fn path_order(event: &str, user: &str) -> Result<OrderRequest, ApiError> {
    Ok(OrderRequest {
        event: path_event(event)?,
        user: UserId::parse(user).map_err(ApiError::InvalidInput)?,
    })
}

/// The most bytes a request body may have; beyond, 413.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// JSON, or no content type at all (as from some load generators).
fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(header) = req.headers().get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = header.to_str().unwrap_or_default();
    let mime = text.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = mime.split_once('/').unwrap_or_default();
    let subtype = subtype.as_bytes();
    let json_subtype = subtype.eq_ignore_ascii_case(b"json")
        || (subtype.len() >= 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"));
    if kind.eq_ignore_ascii_case("application") && json_subtype {
        Ok(())
    } else {
        Err(ApiError::InvalidInput(format!(
            "Content-Type must be application/json, not {text:?}"
        )))
    }
}

/// The value of a required field, or a 400 naming it.
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a Value, ApiError> {
    object
        .get(name)
        .ok_or_else(|| ApiError::InvalidInput(format!("{name} is required")))
}

/// The body of `book` and `cancel`.
#[derive(ToSchema)]
pub struct OrderRequest {
    #[schema(rename = "eventId")]
    pub event: EventId,
    #[schema(rename = "userId")]
    pub user: UserId,
}

impl FromJsonObject for OrderRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        Ok(OrderRequest {
            event: EventId::from_json(field(object, "eventId")?).map_err(ApiError::InvalidInput)?,
            user: UserId::from_json(field(object, "userId")?).map_err(ApiError::InvalidInput)?,
        })
    }
}

impl Canonical for OrderRequest {
    fn canonical(&self) -> Vec<u8> {
        // The user's key: `7` and `"7"` are one user, so one request (a
        // retry replays the first answer, in the form it was sent).
        let fields = json!({"eventId": self.event, "userId": self.user.key().as_str()});
        serde_json::to_vec(&fields).expect("ids serialize")
    }
}

/// The body of `initialize`.
#[derive(ToSchema)]
pub struct InitializeRequest {
    #[schema(rename = "eventId")]
    pub event: EventId,
    /// The id as the client wrote it, a string (`"7"`) or a number (`7`),
    /// echoed back in that form as the Node.js original did; a number in its
    /// canonical spelling (`7.0` and `7e0` come back as `7`).
    #[schema(ignore)]
    pub event_as_sent: Value,
    /// The tickets for sale.
    #[schema(rename = "totalTickets", minimum = 1, maximum = 10_000_000)]
    pub total_tickets: u32,
    /// `true` unless given: bookings, holds and places in the queue are taken.
    #[schema(rename = "salesOpen")]
    pub sales_open: Option<bool>,
    /// `{"mode": "assign"}` unless given.
    #[schema(rename = "waitingList", value_type = Option<WaitingListBody>)]
    pub waiting_list: Option<WaitingListMode>,
    /// A hold's duration when its request names none, 1 to 86400; the
    /// server's `hold_secs` unless given.
    #[schema(rename = "holdSecs", minimum = 1, maximum = 86400)]
    pub hold_secs: Option<u32>,
}

impl InitializeRequest {
    /// The settings the event is created with: those given, else the defaults.
    pub fn event_settings(&self) -> EventSettings {
        let defaults = EventSettings::new(self.total_tickets);
        EventSettings {
            total_tickets: self.total_tickets,
            sales_open: self.sales_open.unwrap_or(defaults.sales_open),
            waiting_list: self.waiting_list.unwrap_or(defaults.waiting_list),
            hold_secs: self.hold_secs,
        }
    }
}

impl FromJsonObject for InitializeRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, ApiError> {
        let sent = field(object, "eventId")?;
        let event = EventId::from_json(sent).map_err(ApiError::InvalidInput)?;
        let event_as_sent = match sent {
            Value::Number(_) => json!(event),
            _ => sent.clone(),
        };
        let total_tickets = total_tickets_from_json(field(object, "totalTickets")?)
            .map_err(ApiError::InvalidInput)?;
        let SettingsPatch {
            sales_open,
            waiting_list,
            hold_secs,
            ..
        } = settings_of(object)?;
        Ok(InitializeRequest {
            event,
            event_as_sent,
            total_tickets,
            sales_open,
            waiting_list,
            hold_secs,
        })
    }
}

impl Canonical for InitializeRequest {
    fn canonical(&self) -> Vec<u8> {
        // The event, not its spelling: `7` and `"7"` are one event, as one
        // user is one user in `OrderRequest::canonical`. The other settings
        // only where given: a creation without them keeps its old fingerprint.
        let mut fields = Map::new();
        fields.insert("eventId".into(), json!(self.event));
        let settings = SettingsPatch {
            total_tickets: Some(self.total_tickets),
            sales_open: self.sales_open,
            waiting_list: self.waiting_list,
            hold_secs: self.hold_secs,
        };
        canonical_settings(&settings, &mut fields);
        serde_json::to_vec(&fields).expect("ids serialize")
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn check(content_type: &str) -> Result<(), ApiError> {
        check_content_type(
            &TestRequest::default()
                .insert_header((CONTENT_TYPE, content_type))
                .to_http_request(),
        )
    }

    #[test]
    fn json_content_types_pass_whatever_their_case_or_parameters() {
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/vnd.api+json",
            "application/problem+JSON",
        ] {
            assert!(check(json).is_ok(), "{json:?} is JSON");
        }
        for other in [
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            "application/ json",
            "application",
            "json",
        ] {
            assert!(check(other).is_err(), "{other:?} is not JSON");
        }
    }
}
