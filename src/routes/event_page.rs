//! `GET /events/{eventId}`: a page that shows one event live, for people
//! (organisers watching a release, a user watching their place), and the
//! files it loads under `/static/`. Everything is built into the binary
//! from `web/`, served as is: no CDN, no build step. The page reads the
//! event's streams (`streams.rs`) with the browser's `EventSource`, and
//! draws its chart with uPlot, vendored under its MIT licence
//! (`web/vendor/uplot`).
//!
//! The page is outside `/api`, so it loads without an API key; its streams
//! are API reads, and `EventSource` cannot send a key: with keys
//! configured, the page says so instead of showing figures.

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpResponse};

use super::extract::{path_event, PathSegments};
use crate::error::ApiError;

/// The page's files: path under `/static/`, media type, content.
const FILES: [(&str, &str, &str); 4] = [
    (
        "event.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/event.js"),
    ),
    (
        "event.css",
        "text/css; charset=utf-8",
        include_str!("../../web/event.css"),
    ),
    (
        "uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../web/vendor/uplot/uPlot.min.css"),
    ),
];

const PAGE: &str = include_str!("../../web/event.html");

/// Mounts the page and its files.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/events/{eventId}", super::ALLOW_GET).route(web::get().to(page)));
    for (path, media_type, content) in FILES {
        let serve = move || async move {
            HttpResponse::Ok()
                .content_type(media_type)
                // Small files: checked again at each load, so that a new
                // release's page never runs an old script.
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .body(content)
        };
        cfg.service(
            super::resource(&format!("/static/{path}"), super::ALLOW_GET)
                .route(web::get().to(serve)),
        );
    }
}

/// `GET /events/{eventId}`: the page, for any well-formed event id (the
/// page itself says when there is no such event). 400 for an id the API
/// would refuse.
async fn page(PathSegments(event): PathSegments<String>) -> Result<HttpResponse, ApiError> {
    path_event(&event)?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Its script, style and streams come from this server only.
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'self'"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(PAGE))
}
