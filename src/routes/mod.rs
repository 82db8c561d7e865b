//! HTTP routes: each validates its request, finds the event's actor and
//! forwards the request to it as a message.

mod book;
mod cancel;
mod extract;
mod initialize;
mod status;

use actix::{Addr, Handler, Message};
use actix_web::{web, HttpResponse, ResponseError};
use futures::channel::oneshot;
use serde_json::json;

use crate::actors::{EventActor, Reply};
use crate::error::ApiError;
pub use extract::BodyLimit;

/// Mounts every route of the API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health").route(web::get().to(health)))
        .service(resource("/api/initialize").route(web::post().to(initialize::initialize)))
        .service(resource("/api/book").route(web::post().to(book::book)))
        .service(resource("/api/cancel").route(web::post().to(cancel::cancel)))
        .service(resource("/api/status/{eventId}").route(web::get().to(status::event_status)))
        .service(
            resource("/api/status/{eventId}/{userId}").route(web::get().to(status::user_status)),
        );
}

/// A resource that answers a JSON 405 to the methods it has no route for.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        ApiError::MethodNotAllowed.error_response()
    }))
}

/// The JSON 404 for every path that is not a route.
pub async fn route_not_found() -> HttpResponse {
    ApiError::RouteNotFound.error_response()
}

/// Liveness: answers without touching any actor or the database.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Forwards a book or cancel to the event's actor and waits for its answer,
/// which comes once the change is committed (or at once if it is refused).
async fn forward<M, T>(
    actor: &Addr<EventActor>,
    message: impl FnOnce(Reply<T>) -> M,
) -> Result<T, ApiError>
where
    M: Message<Result = ()> + Send + 'static,
    EventActor: Handler<M>,
{
    let (reply, answer) = oneshot::channel();
    actor.do_send(message(reply));
    // No answer at all means the actor is gone: the server is stopping.
    Ok(answer
        .await
        .map_err(|oneshot::Canceled| ApiError::ServiceUnavailable)??)
}
