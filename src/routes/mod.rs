//! HTTP routes: each validates its request, finds the event's actor and
//! forwards the request to it as a message.

mod access;
mod book;
mod bookings;
mod cancel;
mod event_page;
mod event_settings;
mod events;
mod extract;
mod head;
mod holds;
mod initialize;
mod json_errors;
mod observe;
// Public: `openapi::ApiDoc::openapi()` gives the document without a server.
pub mod openapi;
mod operations;
mod order;
mod page;
mod recovery;
mod status;
mod streams;
mod strict_json;

use actix_cors::Cors;
use actix_web::http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse, ResponseError};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::configuration::CorsSettings;
use crate::error::ApiError;
use crate::idempotency;
pub use access::Access;
pub use extract::BodyLimit;
pub use head::head_as_get;
pub use json_errors::json_errors;
pub use observe::observe;

/// Mounts every route: `/health`, `/ready`, `/metrics`, `/docs`,
/// `/api/openapi.json` and the events' live pages open to all, the API
/// behind the access guard.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in this order. The document is open to all, like
    // /health, so it comes before the /api scope and its guard. The docs
    // page comes last: its pattern is a regular expression, which every
    // booking would otherwise be matched against first.
    cfg.service(resource("/health", ALLOW_GET).route(web::get().to(operations::health)))
        .service(resource("/ready", ALLOW_GET).route(web::get().to(operations::ready)))
        .service(resource("/metrics", ALLOW_GET).route(web::get().to(operations::metrics)))
        .service(openapi::document_resource())
        .configure(event_page::configure)
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
                )
                // The resource routes, after the old ones that most clients still use.
                .service(
                    resource("/events", "GET, HEAD, POST")
                        .route(web::get().to(events::list_events))
                        .route(web::post().to(events::create_event)),
                )
                .service(
                    resource("/events/{eventId}", "GET, HEAD, PATCH")
                        .route(web::get().to(events::get_event))
                        .route(web::patch().to(event_settings::update_event)),
                )
                .service(
                    resource("/events/{eventId}/bookings", "POST")
                        .route(web::post().to(bookings::create_booking)),
                )
                .service(
                    resource("/events/{eventId}/bookings/{userId}", "GET, HEAD, DELETE")
                        .route(web::get().to(bookings::get_booking))
                        .route(web::delete().to(bookings::delete_booking)),
                )
                .service(
                    resource("/events/{eventId}/stream", ALLOW_GET)
                        .route(web::get().to(streams::event_stream)),
                )
                .service(
                    resource("/events/{eventId}/bookings/{userId}/stream", ALLOW_GET)
                        .route(web::get().to(streams::standing_stream)),
                )
                .service(
                    resource("/events/{eventId}/holds", "POST")
                        .route(web::post().to(holds::create_hold)),
                )
                .service(
                    resource("/events/{eventId}/holds/{userId}", "GET, HEAD, DELETE")
                        .route(web::get().to(holds::get_hold))
                        .route(web::delete().to(holds::release_hold)),
                )
                .service(
                    resource("/events/{eventId}/holds/{userId}/confirm", "POST")
                        .route(web::post().to(holds::confirm_hold)),
                )
                .service(
                    resource("/events/{eventId}/waiting-list", ALLOW_GET)
                        .route(web::get().to(bookings::waiting_list)),
                ),
        )
        .service(SwaggerUi::new("/docs/{_:.*}").config(Config::from(openapi::DOCUMENT_PATH)));
}

/// Cross-origin access for browser pages, as configured. A request from an
/// origin not allowed is served without CORS headers (the browser then
/// withholds the answer), never refused with an error of ours.
pub fn cors(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
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
