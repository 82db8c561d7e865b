//! The routes of whoever runs the server: liveness, readiness and metrics.
//! Open to all, like `/docs`, and none of them touches an event actor.

use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::ToSchema;

use crate::actors::{CheckWritable, EventRegistry, OrderStore};

/// Longest wait for the readiness probe's write; a probe that waits longer is a failed one.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The body of a probe's answer.
#[derive(Serialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok` (liveness), `ready` or `unavailable` (readiness).
    status: &'static str,
    /// Only when `unavailable`: why, e.g. that the database is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl ProbeStatus {
    fn is(status: &'static str) -> Self {
        ProbeStatus {
            status,
            reason: None,
        }
    }
}

/// Liveness: answers without touching any actor or the database.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "Serving", body = ProbeStatus)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(ProbeStatus::is("ok"))
}

/// Readiness: recovery is over, and a transaction that needs room commits,
/// through the same store as the bookings, so it waits behind theirs.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Recovered, and the database takes writes", body = ProbeStatus),
    (status = 503, description = "Not ready: the reason says why (still starting, the database is full or cannot be written)", body = ProbeStatus),
))]
pub async fn ready(
    registry: web::Data<EventRegistry>,
    store: web::Data<Addr<OrderStore>>,
) -> HttpResponse {
    let reason = if !registry.is_recovered() {
        "recovering: the stored idempotency keys are still being read".to_string()
    } else {
        match store.send(CheckWritable).timeout(READY_TIMEOUT).await {
            Ok(Ok(())) => return HttpResponse::Ok().json(ProbeStatus::is("ready")),
            Ok(Err(error)) => format!("the database cannot be written: {error}"),
            Err(actix::MailboxError::Timeout) => {
                format!("the database did not answer within {READY_TIMEOUT:?}")
            }
            Err(actix::MailboxError::Closed) => "the server is stopping".to_string(),
        }
    };
    HttpResponse::ServiceUnavailable().json(ProbeStatus {
        status: "unavailable",
        reason: Some(reason),
    })
}

/// Prometheus scrape: request counts and latencies by route, the booking
/// figures, commit batches and queue rejections.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
))]
pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
