//! HTTP routes: each validates its request, finds the event's actor and
//! forwards the request to it as a message.

mod access;
mod book;
mod cancel;
mod extract;
mod head;
mod initialize;
mod json_errors;
mod observe;
mod openapi;
mod operations;
mod recovery;
mod status;
mod strict_json;

use std::sync::Arc;

use actix::{Handler, Message};
use actix_cors::Cors;
use actix_web::http::header::{
    ContentType, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::actors::{EventActor, EventRegistry, QueueSlot, Recorder, Reply};
use crate::booking::Refusal;
use crate::configuration::CorsSettings;
use crate::error::ApiError;
use crate::idempotency::{self, Answer, Begin, Idempotency, KeyClaim};
use crate::ids::UserId;
pub use access::Access;
pub use extract::BodyLimit;
use extract::{FromJsonObject, OrderRequest, Valid};
pub use head::head_as_get;
pub use json_errors::json_errors;
pub use observe::observe;

/// Mounts every route: `/health`, `/ready`, `/metrics`, `/docs` and
/// `/api/openapi.json` open to all, the API behind the access guard.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in this order. The document is open to all, like
    // /health, so it comes before the /api scope and its guard. The docs
    // page comes last: its pattern is a regular expression, which every
    // booking would otherwise be matched against first.
    cfg.service(resource("/health", ALLOW_GET).route(web::get().to(operations::health)))
        .service(resource("/ready", ALLOW_GET).route(web::get().to(operations::ready)))
        .service(resource("/metrics", ALLOW_GET).route(web::get().to(operations::metrics)))
        .service(openapi::document_resource())
        .service(
            web::scope("/api")
                // The guard runs first: a stranger is refused even during recovery.
                .wrap(from_fn(recovery::after_recovery))
                .wrap(from_fn(access::guard))
                .service(
                    resource("/initialize", "POST").route(web::post().to(initialize::initialize)),
                )
                .service(resource("/book", "POST").route(web::post().to(book::book)))
                .service(resource("/cancel", "POST").route(web::post().to(cancel::cancel)))
                .service(
                    resource("/status/{eventId}", ALLOW_GET)
                        .route(web::get().to(status::event_status)),
                )
                .service(
                    resource("/status/{eventId}/{userId}", ALLOW_GET)
                        .route(web::get().to(status::user_status)),
                ),
        )
        .service(SwaggerUi::new("/docs/{_:.*}").config(Config::from(openapi::DOCUMENT_PATH)));
}

/// Cross-origin access for browser pages, as configured. A request from an
/// origin not allowed is served without CORS headers (the browser then
/// withholds the answer), never refused with an error of ours.
pub fn cors(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([AUTHORIZATION, CONTENT_TYPE, idempotency::HEADER])
        .expose_headers([
            RETRY_AFTER,
            LOCATION,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(3600)
        .block_on_origin_mismatch(false);
    for origin in &settings.allowed_origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// What `Allow` lists for a `GET` route: `HEAD` is answered wherever `GET` is (see `head_as_get`).
const ALLOW_GET: &str = "GET, HEAD";

/// A resource that answers a JSON 405, with `Allow`, to the methods it has no route for.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    let not_allowed = move || async move { ApiError::MethodNotAllowed { allow }.error_response() };
    web::resource(path).default_service(web::to(not_allowed))
}

/// The JSON 404 for every path that is not a route.
pub async fn route_not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}

/// The answer as it goes out, and as an idempotent request's answer is stored.
fn respond(answer: &Answer) -> HttpResponse {
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

/// A success answer: `status` and the JSON of `body`.
fn success<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    let body = serde_json::to_vec(body).expect("an answer serializes");
    Answer {
        status: status.as_u16(),
        body: body.into(),
    }
}

/// An error answer, exactly as `ApiError` sends it.
fn failure(error: &ApiError) -> Answer {
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
async fn begin(
    registry: &EventRegistry,
    idempotency: &web::Data<Idempotency>,
    req: &HttpRequest,
    request: &impl FromJsonObject,
    sent: &[u8],
) -> Result<Result<Option<KeyClaim>, HttpResponse>, ApiError> {
    Ok(
        match idempotency.begin(req, || request.canonical(), sent)? {
            None => Ok(None),
            Some(Begin::Execute(claim)) => Ok(Some(claim)),
            // Boxed: a rare path, kept out of every booking's future (see `order`).
            Some(Begin::Replay { seq }) => {
                Err(replay(&Box::pin(registry.stored_answer(seq)).await?))
            }
        },
    )
}

/// The path shared by book and cancel: idempotency, the event's actor, the
/// message (built by `message` from the user, reply channel and recorder),
/// and the answer as `answer` renders it, both sent and stored.
///
/// actix boxes the future of every request, and its size is that of the
/// largest state it awaits. The rare paths it awaits (a replay, a stored
/// refusal) box their own, which keeps a booking's under 1 KB: glibc serves
/// that from its per-thread cache, a larger block from its slower general
/// path (it was 2 KB; see docs/performance.md).
async fn order<M, T>(
    registry: &EventRegistry,
    idempotency: &web::Data<Idempotency>,
    req: &HttpRequest,
    Valid(request, body): Valid<OrderRequest>,
    answer: fn(&UserId, Result<&T, Refusal>) -> Answer,
    message: impl FnOnce(Arc<str>, Reply<T>, Option<Recorder<T, Refusal>>, QueueSlot) -> M,
) -> Result<HttpResponse, ApiError>
where
    M: Message<Result = ()> + Send + 'static,
    EventActor: Handler<M>,
    T: Send + 'static,
{
    let claim = match begin(registry, idempotency, req, &request, &body).await? {
        Ok(claim) => claim,
        Err(replayed) => return Ok(replayed),
    };
    let Some(actor) = registry.get(&request.event) else {
        return refuse(registry, claim, ApiError::EventNotFound).await;
    };
    let recorder = claim.map(|claim| {
        let user = request.user.clone();
        Box::new(move |decided: Result<&T, Refusal>| claim.answer(answer(&user, decided)))
            as Recorder<T, Refusal>
    });
    let user = request.user.key().clone();
    let outcome = registry
        .forward(&actor, |reply, slot| message(user, reply, recorder, slot))
        .await?;
    Ok(respond(&answer(&request.user, Ok(&outcome))))
}
