//! What operators rely on: probes, the healthcheck command, metrics and logs.

use std::collections::HashMap;
use std::process::Command;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, BINARY};

#[actix_web::test]
async fn health_and_ready_answer_once_recovered() {
    let app = spawn_app();
    let health = app.get("/health").await;
    assert_eq!((health.status, health.body), (200, json!({"status": "ok"})));
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({"status": "ready"}))
    );
    assert!(ready.content_type.starts_with("application/json"));
}

/// Writes `keys` answered idempotency keys straight into the database: all
/// of them are read back at a start, before requests for events are let in.
fn store_keys(database: &std::path::Path, keys: u32) {
    let conn = rusqlite::Connection::open(database).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO idempotency (scope, key, fingerprint, status, body, stored_at)
         SELECT '', 'key' || i, zeroblob(32), 200, '{}', unixepoch() FROM n",
        [keys],
    )
    .unwrap();
}

#[actix_web::test]
async fn ready_says_recovering_until_the_stored_keys_are_read_while_requests_wait() {
    const KEYS: u32 = 300_000;
    let mut app = spawn_app();
    app.initialize(json!("big"), 1).await;
    app.book(json!("big"), json!("first")).await;
    app.stop_with("TERM");
    store_keys(&app.database(), KEYS);
    app.start();

    // The server listens from the start: liveness yes, readiness not yet.
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "{:?}", health.body);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "unavailable");
    let reason = ready.body["reason"].as_str().expect("a reason");
    assert!(reason.contains("recovering"), "{reason}");

    // A request for an event waits for recovery instead of finding the event unknown.
    let retry = app.initialize(json!("big"), 1).await;
    assert_eq!(retry.status, 409, "{:?}", retry.body);
    let late = app.book(json!("big"), json!("latecomer")).await;
    assert_eq!(late.status, 200, "{:?}", late.body);
    assert_eq!(late.body["status"], "waiting");
    assert_eq!(app.counts("big").await, (1, 1));
    assert_eq!(app.get("/ready").await.status, 200);
}

#[actix_web::test]
async fn a_request_that_outwaits_recovery_is_503_server_starting_and_changes_nothing() {
    // Long enough for the reads below, far shorter than reading 300,000 keys.
    let mut app = spawn_app_with(&[("BOOKING_REQUEST_TIMEOUT_MS", "100")]);
    app.initialize(json!("big"), 1).await;
    app.stop_with("TERM");
    store_keys(&app.database(), 300_000);
    app.start();
    let refused = app.book(json!("big"), json!("early")).await;
    assert_eq!(
        (
            refused.status,
            &refused.body["error"],
            &refused.body["code"]
        ),
        (503, &json!("Server starting"), &json!("server_starting")),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    app.until_ready().await;
    assert_eq!(app.user_status("big", "early").await.status, 404);
}

#[actix_web::test]
async fn sigterm_during_recovery_stops_cleanly_and_loses_nothing() {
    let mut app = spawn_app();
    app.initialize(json!("big"), 1).await;
    app.book(json!("big"), json!("first")).await;
    app.stop_with("TERM");
    store_keys(&app.database(), 200_000);
    app.start();
    assert_eq!(app.get("/ready").await.status, 503, "still recovering");
    let status = app.stop_with("TERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        app.log()
    );
    app.start();
    assert_eq!(app.counts("big").await, (1, 0));
    assert_eq!(app.rows_in("idempotency"), 200_000);
}

#[actix_web::test]
async fn ready_says_unavailable_when_the_database_is_full() {
    let app = spawn_app_with(&[("BOOKING_MAX_PAGE_COUNT", "14")]);
    app.initialize(json!(1), 100_000).await;
    assert_eq!(app.get("/ready").await.status, 200);
    for i in 0.. {
        let answer = app.book(json!(1), json!(format!("{i:0>200}"))).await;
        if answer.status == 503 {
            break;
        }
        assert!(i < 5_000, "the size cap never took effect");
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "unavailable");
    let reason = ready.body["reason"].as_str().expect("a reason");
    assert!(reason.contains("full"), "{reason}");
    // Liveness is not readiness: the process still serves.
    assert_eq!(app.get("/health").await.status, 200);
}

#[actix_web::test]
async fn ready_says_unavailable_while_the_database_is_locked() {
    let app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "100")]);
    // Recovered first: a lock taken during recovery would read as "recovering".
    app.until_ready().await;
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    let reason = ready.body["reason"].as_str().expect("a reason");
    assert!(reason.contains("locked"), "{reason}");
    intruder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.get("/ready").await.status, 200);
}

fn healthcheck(port: u16) -> std::process::ExitStatus {
    Command::new(BINARY)
        .arg("healthcheck")
        .env("BOOKING_PORT", port.to_string())
        .output()
        .expect("the binary runs")
        .status
}

#[actix_web::test]
async fn the_healthcheck_command_exits_0_only_while_the_server_serves() {
    let mut app = spawn_app();
    let port = app.port();
    assert_eq!(healthcheck(port).code(), Some(0));
    app.stop_with("TERM");
    assert_eq!(healthcheck(port).code(), Some(1));
}

#[actix_web::test]
async fn metrics_count_what_was_committed() {
    let app = spawn_app();
    app.initialize(json!(1), 2).await;
    app.initialize(json!(2), 5).await;
    let before = app.metrics().await;
    let value = |page: &HashMap<String, f64>, name: &str| page.get(name).copied().unwrap_or(0.0);
    let delta =
        |after: &HashMap<String, f64>, name: &str| value(after, name) - value(&before, name);

    for user in ["a", "b", "c", "d", "e"] {
        assert_eq!(app.book(json!(1), json!(user)).await.status, 200);
    }
    assert_eq!(app.book(json!(1), json!("a")).await.status, 409);
    assert_eq!(
        app.cancel(json!(1), json!("a")).await.body["status"],
        "reassigned"
    );
    assert_eq!(
        app.cancel(json!(1), json!("e")).await.body["status"],
        "cancelled"
    );
    assert_eq!(app.book(json!(2), json!("z")).await.status, 200);
    assert_eq!(app.status("1").await.status, 200);
    // Made-up methods share one label, so that they cannot add series without end.
    for method in ["BREW", "PROPFIND"] {
        assert_eq!(
            app.request(method, "/api/book", &[], None).await.status,
            405
        );
    }

    let after = app.metrics().await;
    for (name, expected) in [
        ("booking_bookings_total", 3.0),
        ("booking_waiting_list_joins_total", 3.0),
        ("booking_cancellations_total", 2.0),
        ("booking_reassignments_total", 1.0),
        ("booking_booked_tickets", 3.0),
        ("booking_waiting_users", 1.0),
        ("booking_events", 0.0),
        ("booking_storage_errors_total", 0.0),
        ("booking_commit_batch_size_count", 8.0),
        (
            r#"http_requests_total{method="POST",route="/api/book",status="200"}"#,
            6.0,
        ),
        (
            r#"http_requests_total{method="POST",route="/api/book",status="409"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="POST",route="/api/cancel",status="200"}"#,
            2.0,
        ),
        // By route pattern, not by raw path.
        (
            r#"http_requests_total{method="GET",route="/api/status/{eventId}",status="200"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_count{method="POST",route="/api/book"}"#,
            7.0,
        ),
        (
            r#"http_requests_total{method="OTHER",route="/api/book",status="405"}"#,
            2.0,
        ),
    ] {
        assert_eq!(delta(&after, name), expected, "{name}");
    }
    assert_eq!(value(&after, "booking_events"), 2.0);
    assert!(after.contains_key(
        r#"http_request_duration_seconds_bucket{method="POST",route="/api/book",le="0.005"}"#
    ));
    assert!(after.contains_key("booking_commit_duration_seconds_sum"));
}

#[actix_web::test]
async fn gauges_start_from_what_was_recovered() {
    let mut app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("a")).await;
    app.book(json!(1), json!("b")).await;
    app.restart();
    let page = app.metrics().await;
    assert_eq!(page.get("booking_events"), Some(&1.0));
    assert_eq!(page.get("booking_booked_tickets"), Some(&1.0));
    assert_eq!(page.get("booking_waiting_users"), Some(&1.0));
}

#[actix_web::test]
async fn request_lines_are_off_by_default_and_the_configuration_is_logged_without_keys() {
    let app = spawn_app_with(&[("RUST_LOG", ""), ("BOOKING_ADMIN_KEYS", "s3cret-admin")]);
    let key = [("authorization", "Bearer s3cret-admin")];
    let body = json!({"eventId": 1, "totalTickets": 1});
    assert_eq!(
        app.request("POST", "/api/initialize", &key, Some(&body))
            .await
            .status,
        201
    );
    let log = app.log();
    assert!(log.contains("configuration: Settings {"), "{log}");
    assert!(log.contains(&app.database().display().to_string()), "{log}");
    assert!(!log.contains("s3cret-admin"), "a key was logged:\n{log}");
    assert!(!log.contains("POST /api/initialize"), "{log}");
}

#[actix_web::test]
async fn request_lines_show_method_route_status_and_latency_when_asked_for() {
    let app = spawn_app_with(&[("RUST_LOG", ""), ("BOOKING_LOG_REQUESTS", "true")]);
    app.initialize(json!(1), 1).await;
    app.user_status("1", "nobody").await;
    let log = app.log();
    let line = log
        .lines()
        .find(|line| line.contains("GET /api/status/{eventId}/{userId} 404"))
        .unwrap_or_else(|| panic!("no request line:\n{log}"));
    assert!(line.contains("INFO") && line.ends_with("ms"), "{line}");
    assert!(log.contains("POST /api/initialize 201"), "{log}");
}
