//! The OpenAPI 3.1 description of the API, served at `/api/openapi.json`;
//! Swagger UI at `/docs`. utoipa derives it from the routes and from the very
//! types that read requests and write responses, so a field added to one
//! appears in the document. What is written here by hand is what no type
//! says: the patterns the validators in `ids` accept, the `Idempotency-Key`
//! header, and the errors every route shares.

use std::borrow::Cow;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::{ErrorBody, ErrorCode};
use crate::ids::{EventId, UserId, MAX_SAFE_INTEGER};

/// An integer `from..=MAX_SAFE_INTEGER`, or a string matching `pattern`.
fn integer_or_string(from: u64, pattern: &str, description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(from))
                .maximum(Some(MAX_SAFE_INTEGER)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        )
        .description(Some(description))
        .into()
}

impl PartialSchema for EventId {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            1,
            "^[A-Za-z0-9._~-]{1,64}$",
            "A positive integer, or 1-64 characters from A-Z a-z 0-9 . _ ~ -. The integer 7 and the string \"7\" are the same event.",
        )
    }
}

impl ToSchema for EventId {
    fn name() -> Cow<'static, str> {
        "EventId".into()
    }
}

/// What a user id's text may be (see `ids::check_user_text`), in the Basic
/// Multilingual Plane: no control character; no invisible character but
/// the joiners and selectors that emoji and some scripts need, and none of
/// those first or last; neither whitespace first or last. Stricter than the
/// server at the end (which takes a selector after an emoji), so that an id
/// made from it is always taken.
const USER_ID_PATTERN: &str = concat!(
    "^[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0\\uFFF0-\\uFFF8]",
    "([^\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u200B\\u200E\\u200F\\u202A-\\u202E\\u2060-\\u206F\\u3164\\uFEFF\\uFFA0\\uFFF0-\\uFFF8]{0,254}",
    "[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0\\uFFF0-\\uFFF8])?$"
);

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        integer_or_string(
            0,
            USER_ID_PATTERN,
            "1-256 characters (after NFC normalization) without control characters, neither beginning nor ending with whitespace or an invisible character; or a non-negative integer (the same user as its decimal text).",
        )
    }
}

impl ToSchema for UserId {
    fn name() -> Cow<'static, str> {
        "UserId".into()
    }
}

/// The header that makes `book`, `cancel` and `initialize` safe to retry.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1-255 printable ASCII characters, not starting or ending with a space
    /// (HTTP drops those): a retry with the same key and request (the same
    /// route and fields, however spelled: member order, `1.0` for `1`, NFC)
    /// gets the first answer again.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = r"^[\x21-\x7E]([\x20-\x7E]{0,253}[\x21-\x7E])?$"
    )]
    pub idempotency_key: Option<String>,
}

/// The error answers of the access guard, on every route under `/api`.
#[derive(IntoResponses)]
pub enum AccessErrors {
    #[response(
        status = 401,
        description = "No or unknown API key, when keys are configured (`unauthorized`)"
    )]
    Unauthorized(ErrorBody<'static>),
    #[response(
        status = 429,
        description = "Too many requests (`rate_limited`)",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    RateLimited(ErrorBody<'static>),
}

/// The error answers every POST route can give, besides its own.
#[derive(IntoResponses)]
pub enum PostErrors {
    #[response(
        status = 400,
        description = "Invalid input, or a malformed Idempotency-Key (`invalid_input`)"
    )]
    InvalidInput(ErrorBody<'static>),
    #[response(
        status = 413,
        description = "Body over the limit (`payload_too_large`)"
    )]
    PayloadTooLarge(ErrorBody<'static>),
    #[response(
        status = 422,
        description = "Idempotency key reused with a different request (`idempotency_key_reused`)"
    )]
    IdempotencyKeyReused(ErrorBody<'static>),
    #[response(
        status = 503,
        description = "Storage unavailable, server busy or still starting (`storage_unavailable`, `server_busy`, `server_starting`: nothing was changed), request timed out (`request_timed_out`: a change may still be stored), or the server is stopping (`service_unavailable`)",
        headers(("Retry-After" = u64, description = "Seconds to wait, when busy, starting or timed out"))
    )]
    Unavailable(ErrorBody<'static>),
}

/// The error answers both status routes can give, besides their own 404.
#[derive(IntoResponses)]
pub enum GetErrors {
    #[response(status = 400, description = "Invalid id in the path (`invalid_input`)")]
    InvalidInput(ErrorBody<'static>),
    #[response(
        status = 503,
        description = "The event is reloading after a failed commit, the server is still starting, no answer in time, or the server is stopping (`storage_unavailable`, `server_starting`, `request_timed_out`, `service_unavailable`)",
        headers(("Retry-After" = u64, description = "Seconds to wait, when starting or timed out"))
    )]
    Unavailable(ErrorBody<'static>),
}

/// The bearer scheme of the API keys (required only when keys are configured).
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
            "An admin key (everything) or a client key (book, cancel, read); only when keys are configured.",
        ));
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer.build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "event-booking", description = "Sells event tickets: events, bookings, a FIFO waiting list.

**Bodies** are JSON objects with exactly one reading: an object that names a member twice, at any depth, is refused with 400 and `details` such as ``duplicate field `userId` ``.

**Integers** (`eventId`, `userId`, `totalTickets`): JSON has one kind of number, so an integral spelling such as `1.0`, `1e2` or `0.5e1` is that integer, as in JSON Schema and JavaScript, and every answer carries it in canonical form (`1`, `100`, `5`). A spelling with a fraction or an exponent is read as an IEEE 754 double, as JavaScript reads it. Refused with 400, the `details` naming the rule broken: a negative number, zero (where the least is 1), a fraction (`1.5`: not a whole number), or a number above the field's bound (too large, with the bound: 9007199254740991 = 2^53 - 1 for ids, the largest integer JavaScript holds exactly; 10000000 tickets).

**User ids** given as strings are normalized to Unicode NFC (UAX #15) in bodies and paths alike, before any check: canonically equivalent spellings (`j\\u00fcrgen` and `ju\\u0308rgen`, U+212B ANGSTROM SIGN and U+00C5) are one user, and answers carry the NFC form. Compatibility forms (`\\uff55\\uff11` and `u1`) and case stay distinct. Refused with 400: an empty or blank id (only whitespace or invisible characters such as U+200B ZERO WIDTH SPACE), an id that begins or ends with whitespace, an invisible character anywhere but the joiners that emoji and some scripts need (ZWJ, ZWNJ, the combining grapheme joiner, Mongolian selectors; never first or last) and the variation selectors and tags that choose how an emoji or an ideograph is drawn (after one), and control characters. The `UserId` pattern states this for the Basic Multilingual Plane; invisible characters beyond it (tags, U+1D173...) follow the same rules. A path that does not percent-decode to UTF-8 is refused. Length (1-256 characters) is counted after normalization.

Every `GET` route answers `HEAD` as well, with the same status and headers and no body."),
    paths(
        super::initialize::initialize,
        super::book::book,
        super::cancel::cancel,
        super::status::event_status,
        super::status::user_status,
        super::events::create_event,
        super::events::list_events,
        super::events::get_event,
        super::streams::event_stream,
        super::event_settings::update_event,
        super::bookings::create_booking,
        super::bookings::get_booking,
        super::bookings::delete_booking,
        super::streams::standing_stream,
        super::bookings::waiting_list,
        super::holds::create_hold,
        super::holds::get_hold,
        super::holds::confirm_hold,
        super::holds::release_hold,
        super::operations::health,
        super::operations::ready,
        super::operations::metrics
    ),
    components(schemas(EventId, UserId, ErrorCode)),
    modifiers(&BearerKeys)
)]
pub struct ApiDoc;

/// Where the document is served, and where the docs page reads it from.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";

/// `GET /api/openapi.json`: the document, serialized once per worker.
pub fn document_resource() -> actix_web::Resource {
    let document = web::Bytes::from(
        serde_json::to_vec(&ApiDoc::openapi()).expect("the OpenAPI document serializes"),
    );
    super::resource(DOCUMENT_PATH, super::ALLOW_GET).route(web::get().to(move || {
        let document = document.clone();
        async move {
            HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(document)
        }
    }))
}
