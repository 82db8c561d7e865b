//! The booking API as the load generator sees it: one call per endpoint, each
//! reduced to what a client was told.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// What one request told its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Booked,
    Waiting {
        position: u64,
    },
    Cancelled,
    /// The cancelled ticket went to this user (the load generator's user number).
    Reassigned {
        to: u64,
    },
    /// A ticket held until then (milliseconds since the Unix epoch).
    Held {
        expires_at_ms: i64,
    },
    /// A confirm found no live hold (404 `hold_not_found`): it had lapsed.
    HoldGone,
    /// `GET /health` answered 200.
    Healthy,
    /// Turned away before anything was decided: 503 `server_busy` or 429,
    /// with the server's `Retry-After`. Overload answered honestly; nothing changed.
    Refused {
        retry_after_secs: u64,
    },
    /// Anything else: an error status, an unexpected body, or no answer at all.
    Error,
}

/// A user's standing as `GET /api/status/{event}/{user}` (or its resource
/// route) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Standing {
    pub status: String,
    pub position: Option<u64>,
    /// A held user's expiry, an expired one's lapse (RFC 3339).
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
    #[serde(rename = "expiredAt")]
    pub expired_at: Option<String>,
}

/// The counts of `GET /api/status/{event}` (or `GET /api/events/{event}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    pub total_tickets: u64,
    pub booked_tickets: u64,
    /// Absent on the old route for an event without holds.
    #[serde(default)]
    pub held_tickets: u64,
    pub waiting_list_count: u64,
}

#[derive(Deserialize)]
struct Reply {
    status: Option<String>,
    /// An error's stable code (`server_busy`).
    code: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    position: Option<u64>,
    #[serde(rename = "expiresAt")]
    expires_at: Option<String>,
}

/// Milliseconds since the Unix epoch of an RFC 3339 instant.
pub fn instant_ms(text: &str) -> Option<i64> {
    Some(text.parse::<jiff::Timestamp>().ok()?.as_millisecond())
}

/// The load generator's users are named `u<number>`.
fn user_number(name: &Value) -> Option<u64> {
    name.as_str()?.strip_prefix('u')?.parse().ok()
}

/// Which of the server's two sets of routes a run drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routes {
    /// `POST /api/initialize`, `/api/book`, `/api/cancel`, `GET /api/status/...`.
    #[default]
    Legacy,
    /// The event in the path: `POST /api/events`, `POST .../bookings`,
    /// `DELETE .../bookings/{userId}`, `GET /api/events/...`.
    Resource,
}

/// An HTTP client of one server. Not `Send`: one per thread.
pub struct Api {
    client: awc::Client,
    base: String,
    routes: Routes,
    /// Send an `Idempotency-Key` (unique per request) with every book and cancel.
    idempotency_keys: bool,
}

impl Api {
    pub fn new(base: &str, connections: usize) -> Self {
        // An idle connection is dropped after 2 s, before the server's
        // keep-alive (5 s by default) closes it: awc would reuse a closed one
        // as a `Connect(Disconnected)` error instead of connecting again.
        let connector = awc::Connector::new()
            .limit(connections)
            .conn_keep_alive(Duration::from_secs(2));
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(30))
            .finish();
        Api {
            client,
            base: base.trim_end_matches('/').to_string(),
            routes: Routes::Legacy,
            idempotency_keys: false,
        }
    }

    /// The same client, on `routes`.
    pub fn on(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// The same client, sending an `Idempotency-Key` with every book and cancel.
    pub fn with_idempotency_keys(mut self, on: bool) -> Self {
        self.idempotency_keys = on;
        self
    }

    /// Sends a request and returns its status (`None` without an answer) and body.
    async fn call(&self, method: &str, path: &str, body: Option<String>) -> (Option<u16>, Vec<u8>) {
        let (status, body, _) = self.call_with_key(method, path, body, None).await;
        (status, body)
    }

    async fn call_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        idempotency_key: Option<String>,
    ) -> (Option<u16>, Vec<u8>, u64) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .insert_header(("content-type", "application/json")),
        };
        if let Some(key) = idempotency_key {
            request = request.insert_header(("idempotency-key", key));
        }
        let sent = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        };
        let Ok(mut response) = sent else {
            return (None, Vec::new(), 0);
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        match response.body().await {
            Ok(bytes) => (Some(status), bytes.to_vec(), retry_after),
            Err(_) => (None, Vec::new(), 0),
        }
    }

    pub async fn initialize(&self, event: &str, total_tickets: u32) -> Result<(), String> {
        let body = format!(r#"{{"eventId":"{event}","totalTickets":{total_tickets}}}"#);
        let path = match self.routes {
            Routes::Legacy => "/api/initialize",
            Routes::Resource => "/api/events",
        };
        match self.call("POST", path, Some(body)).await {
            (Some(201), _) => Ok(()),
            (status, body) => Err(format!(
                "initializing event {event} answered {status:?}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    pub async fn book(&self, event: &str, user: u64) -> (Option<u16>, Outcome) {
        let (path, body) = match self.routes {
            Routes::Legacy => (
                "/api/book".to_string(),
                format!(r#"{{"eventId":"{event}","userId":"u{user}"}}"#),
            ),
            Routes::Resource => (
                format!("/api/events/{event}/bookings"),
                format!(r#"{{"userId":"u{user}"}}"#),
            ),
        };
        self.order("POST", &path, Some(body), event, user).await
    }

    pub async fn cancel(&self, event: &str, user: u64) -> (Option<u16>, Outcome) {
        match self.routes {
            Routes::Legacy => {
                let body = format!(r#"{{"eventId":"{event}","userId":"u{user}"}}"#);
                self.order("POST", "/api/cancel", Some(body), event, user)
                    .await
            }
            Routes::Resource => {
                let path = format!("/api/events/{event}/bookings/u{user}");
                self.order("DELETE", &path, None, event, user).await
            }
        }
    }

    /// Holds a ticket for `hold_secs` seconds (the holds exist on the
    /// resource routes only, whichever routes the run drives).
    pub async fn hold(&self, event: &str, user: u64, hold_secs: u32) -> (Option<u16>, Outcome) {
        let path = format!("/api/events/{event}/holds");
        let body = format!(r#"{{"userId":"u{user}","holdSecs":{hold_secs}}}"#);
        self.order("POST", &path, Some(body), event, user).await
    }

    /// Confirms a hold: booked, or `HoldGone` if it lapsed first.
    pub async fn confirm(&self, event: &str, user: u64) -> (Option<u16>, Outcome) {
        let path = format!("/api/events/{event}/holds/u{user}/confirm");
        self.order("POST", &path, None, event, user).await
    }

    async fn order(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        event: &str,
        user: u64,
    ) -> (Option<u16>, Outcome) {
        // Each user books once and cancels at most once: unique per request.
        let key = self
            .idempotency_keys
            .then(|| format!("{event}{method}{path}/{user}"));
        let (status, body, retry_after_secs) = self.call_with_key(method, path, body, key).await;
        let outcome = match (status, serde_json::from_slice::<Reply>(&body)) {
            // The resource routes answer a booking with 201.
            (Some(200 | 201), Ok(reply)) => match (reply.status.as_deref(), reply.position) {
                (Some("booked"), _) => Outcome::Booked,
                (Some("waiting"), Some(position)) => Outcome::Waiting { position },
                (Some("cancelled"), _) => Outcome::Cancelled,
                (Some("held"), _) => match reply.expires_at.as_deref().and_then(instant_ms) {
                    Some(expires_at_ms) => Outcome::Held { expires_at_ms },
                    None => Outcome::Error,
                },
                (Some("reassigned"), _) => match reply.user_id.as_ref().and_then(user_number) {
                    Some(to) => Outcome::Reassigned { to },
                    None => Outcome::Error,
                },
                _ => Outcome::Error,
            },
            (
                Some(503),
                Ok(Reply {
                    code: Some(code), ..
                }),
            ) if code == "server_busy" => Outcome::Refused { retry_after_secs },
            (Some(429), _) => Outcome::Refused { retry_after_secs },
            (
                Some(404),
                Ok(Reply {
                    code: Some(code), ..
                }),
            ) if code == "hold_not_found" => Outcome::HoldGone,
            _ => Outcome::Error,
        };
        (status, outcome)
    }

    pub async fn health(&self) -> (Option<u16>, Outcome) {
        let (status, _) = self.call("GET", "/health", None).await;
        (
            status,
            if status == Some(200) {
                Outcome::Healthy
            } else {
                Outcome::Error
            },
        )
    }

    /// The value of the unlabelled metric `name` in `GET /metrics`.
    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        let (status, body) = self.call("GET", "/metrics", None).await;
        if status != Some(200) {
            return Err(format!("/metrics answered {status:?}"));
        }
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /metrics"))
    }

    pub async fn event_counts(&self, event: &str) -> Result<EventCounts, String> {
        let path = match self.routes {
            Routes::Legacy => format!("/api/status/{event}"),
            Routes::Resource => format!("/api/events/{event}"),
        };
        match self.call("GET", &path, None).await {
            (Some(200), body) => {
                serde_json::from_slice(&body).map_err(|e| format!("status of {event}: {e}"))
            }
            (status, _) => Err(format!("status of event {event} answered {status:?}")),
        }
    }

    /// `event`'s counts as its last commit left them, from the listing of
    /// events (`GET /api/events`, paged), which reads the database and never
    /// the event's actor: what the server did by itself, unasked.
    pub async fn committed_counts(&self, event: &str) -> Result<EventCounts, String> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<Value>,
            next: Option<String>,
        }
        let mut after = String::new();
        loop {
            let path = format!("/api/events?limit=1000{after}");
            let page: Page = match self.call("GET", &path, None).await {
                (Some(200), body) => {
                    serde_json::from_slice(&body).map_err(|e| format!("listing: {e}"))?
                }
                (status, _) => return Err(format!("the listing answered {status:?}")),
            };
            if let Some(listed) = page.events.into_iter().find(|e| e["eventId"] == event) {
                return serde_json::from_value(listed).map_err(|e| format!("listing: {e}"));
            }
            match page.next {
                Some(next) => after = format!("&after={next}"),
                None => return Err(format!("event {event} is not listed")),
            }
        }
    }

    /// `None` when the server does not know the user at this event.
    pub async fn standing(&self, event: &str, user: u64) -> Result<Option<Standing>, String> {
        let path = match self.routes {
            Routes::Legacy => format!("/api/status/{event}/u{user}"),
            Routes::Resource => format!("/api/events/{event}/bookings/u{user}"),
        };
        match self.call("GET", &path, None).await {
            (Some(200), body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("u{user}: {e}")),
            (Some(404), _) => Ok(None),
            (status, _) => Err(format!("status of u{user} at {event} answered {status:?}")),
        }
    }
}
