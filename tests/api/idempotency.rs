//! Idempotent retries: an `Idempotency-Key` makes a POST happen once.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: Value) -> Answer {
    app.request("POST", path, &[("idempotency-key", key)], Some(&body))
        .await
}

fn replayed(answer: &Answer) -> bool {
    answer.header("idempotent-replayed") == Some("true")
}

/// A retry got the first answer again, byte for byte, marked as replayed.
fn assert_replay_of(retry: &Answer, first: &Answer) {
    assert_eq!(
        (retry.status, &retry.raw),
        (first.status, &first.raw),
        "{retry:?}"
    );
    assert!(replayed(retry), "{retry:?}");
    assert!(!replayed(first));
}

#[actix_web::test]
async fn a_retried_booking_gets_the_same_answer_and_books_once() {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    let first = post_with_key(
        &app,
        "/api/book",
        "k-1",
        json!({"eventId": 1, "userId": "u1"}),
    )
    .await;
    assert_eq!(first.body, json!({"status": "booked", "userId": "u1"}));
    let retry = post_with_key(
        &app,
        "/api/book",
        "k-1",
        json!({"eventId": 1, "userId": "u1"}),
    )
    .await;
    assert_replay_of(&retry, &first);
    assert_eq!(app.counts("1").await, (1, 0));
    // Without the key, the same booking is a duplicate.
    assert_eq!(app.book(json!(1), json!("u1")).await.status, 409);
}

#[actix_web::test]
async fn a_retried_cancel_does_not_cancel_twice() {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("u1")).await;
    app.book(json!(1), json!("u2")).await;
    let body = json!({"eventId": 1, "userId": "u1"});
    let first = post_with_key(&app, "/api/cancel", "cancel-u1", body.clone()).await;
    assert_eq!(
        first.body,
        json!({"status": "reassigned", "userId": "u2", "cancelledUserId": "u1"})
    );
    let retry = post_with_key(&app, "/api/cancel", "cancel-u1", body).await;
    assert_replay_of(&retry, &first);
    assert_eq!(app.user_status("1", "u2").await.body["status"], "booked");
    assert_eq!(app.counts("1").await, (1, 0));
}

#[actix_web::test]
async fn errors_are_stored_and_replayed_too() {
    let app = spawn_app();
    let body = json!({"eventId": 1, "userId": "u1"});
    let first = post_with_key(&app, "/api/book", "early", body.clone()).await;
    assert_eq!(
        (first.status, &first.body),
        (
            404,
            &json!({"error": "Event not found", "code": "event_not_found"})
        )
    );
    app.initialize(json!(1), 5).await;
    // The event exists now, but the key's answer was the 404.
    assert_replay_of(
        &post_with_key(&app, "/api/book", "early", body.clone()).await,
        &first,
    );
    assert_eq!(
        app.user_status("1", "u1").await.status,
        404,
        "the retry booked nothing"
    );

    app.book(json!(1), json!("u2")).await;
    let duplicate = post_with_key(
        &app,
        "/api/book",
        "dup",
        json!({"eventId": 1, "userId": "u2"}),
    )
    .await;
    assert_eq!(duplicate.status, 409);
    app.cancel(json!(1), json!("u2")).await;
    let retry = post_with_key(
        &app,
        "/api/book",
        "dup",
        json!({"eventId": 1, "userId": "u2"}),
    )
    .await;
    assert_replay_of(&retry, &duplicate);
}

#[actix_web::test]
async fn a_retried_initialize_is_replayed_not_refused() {
    let app = spawn_app();
    let body = json!({"eventId": "gig", "totalTickets": 3});
    let first = post_with_key(&app, "/api/initialize", "create-gig", body.clone()).await;
    assert_eq!(first.status, 201);
    assert_replay_of(
        &post_with_key(&app, "/api/initialize", "create-gig", body).await,
        &first,
    );
    let again = post_with_key(
        &app,
        "/api/initialize",
        "other-key",
        json!({"eventId": "gig", "totalTickets": 3}),
    )
    .await;
    assert_eq!(again.status, 409);
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app();
    app.initialize(json!(1), 5).await;
    post_with_key(
        &app,
        "/api/book",
        "k",
        json!({"eventId": 1, "userId": "u1"}),
    )
    .await;
    let reused = post_with_key(
        &app,
        "/api/book",
        "k",
        json!({"eventId": 1, "userId": "u2"}),
    )
    .await;
    assert_eq!(
        (reused.status, reused.body),
        (
            422,
            json!({"error": "Idempotency key reused with a different request", "code": "idempotency_key_reused"})
        )
    );
    let other_route = post_with_key(
        &app,
        "/api/cancel",
        "k",
        json!({"eventId": 1, "userId": "u1"}),
    )
    .await;
    assert_eq!(other_route.status, 422);
    assert_eq!(app.user_status("1", "u2").await.status, 404);
}

#[actix_web::test]
async fn a_retry_while_the_first_is_in_flight_is_409_with_retry_after() {
    let app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "20000")]);
    app.initialize(json!(1), 5).await;
    // Commits stall behind another connection's lock, so the first request stays in flight.
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = json!({"eventId": 1, "userId": "u1"});
    let first = post_with_key(&app, "/api/book", "slow", body.clone());
    let retry_meanwhile = async {
        // The booking is decided (counted) but not committed.
        while app.status("1").await.body["bookedTickets"] != 1 {}
        let retry = post_with_key(&app, "/api/book", "slow", body.clone()).await;
        intruder.execute_batch("ROLLBACK").unwrap();
        retry
    };
    let (first, retry) = futures::join!(first, retry_meanwhile);
    assert_eq!(retry.status, 409, "{retry:?}");
    assert_eq!(retry.body["code"], "idempotency_key_in_flight");
    assert_eq!(retry.header("retry-after"), Some("1"));
    assert_eq!(first.status, 200);
    assert_replay_of(
        &post_with_key(&app, "/api/book", "slow", body).await,
        &first,
    );
}

#[actix_web::test]
async fn keys_are_scoped_per_api_key() {
    let app = spawn_app_with(&[
        ("BOOKING_ADMIN_KEYS", "admin-key-1"),
        ("BOOKING_CLIENT_KEYS", "client-a,client-b"),
    ]);
    let as_admin = [("authorization", "Bearer admin-key-1")];
    app.request(
        "POST",
        "/api/initialize",
        &as_admin,
        Some(&json!({"eventId": 1, "totalTickets": 5})),
    )
    .await;
    for (client, user) in [("Bearer client-a", "a"), ("Bearer client-b", "b")] {
        let headers = [("authorization", client), ("idempotency-key", "shared")];
        let answer = app
            .request(
                "POST",
                "/api/book",
                &headers,
                Some(&json!({"eventId": 1, "userId": user})),
            )
            .await;
        assert_eq!((answer.status, replayed(&answer)), (200, false), "{client}");
    }
}

#[actix_web::test]
async fn answers_survive_kill_9() {
    let mut app = spawn_app();
    app.initialize(json!(1), 1).await;
    let body = json!({"eventId": 1, "userId": "u1"});
    let first = post_with_key(&app, "/api/book", "before-crash", body.clone()).await;
    app.send_signal("KILL");
    app.wait_exit();
    app.start();
    assert_replay_of(
        &post_with_key(&app, "/api/book", "before-crash", body).await,
        &first,
    );
    assert_eq!(app.counts("1").await, (1, 0));
}

#[actix_web::test]
async fn a_5xx_is_not_stored_so_the_retry_executes() {
    let app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "100")]);
    app.initialize(json!(1), 5).await;
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = json!({"eventId": 1, "userId": "u1"});
    assert_eq!(
        post_with_key(&app, "/api/book", "unlucky", body.clone())
            .await
            .status,
        503
    );
    intruder.execute_batch("ROLLBACK").unwrap();
    let retry = post_with_key(&app, "/api/book", "unlucky", body).await;
    assert_eq!((retry.status, replayed(&retry)), (200, false));
    assert_eq!(retry.body["status"], "booked");
}

#[actix_web::test]
async fn a_malformed_key_is_400() {
    let app = spawn_app();
    app.initialize(json!(1), 5).await;
    for key in ["", &"k".repeat(256), "tab\tkey", "é"] {
        let answer = post_with_key(
            &app,
            "/api/book",
            key,
            json!({"eventId": 1, "userId": "u1"}),
        )
        .await;
        assert_eq!(answer.status, 400, "{key:?}");
        assert!(answer.body["details"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    assert_eq!(
        post_with_key(
            &app,
            "/api/book",
            &"k".repeat(255),
            json!({"eventId": 1, "userId": "u1"})
        )
        .await
        .status,
        200
    );
    assert_eq!(app.user_status("1", "u1").await.body["status"], "booked");
}

#[actix_web::test]
async fn answers_are_forgotten_after_the_retention_period() {
    let app = spawn_app_with(&[("BOOKING_IDEMPOTENCY__RETENTION_SECS", "1")]);
    app.initialize(json!(1), 5).await;
    let body = json!({"eventId": 1, "userId": "u1"});
    assert_eq!(
        post_with_key(&app, "/api/book", "short-lived", body.clone())
            .await
            .status,
        200
    );
    // Time passing is the point here, not waiting for the server.
    std::thread::sleep(Duration::from_millis(2100));
    let later = post_with_key(&app, "/api/book", "short-lived", body).await;
    assert_eq!(
        (later.status, replayed(&later)),
        (409, false),
        "executed again: u1 is already booked"
    );
}

#[actix_web::test]
async fn over_the_cap_on_keys_the_oldest_answers_are_forgotten_in_memory_and_on_disk() {
    let mut app = spawn_app_with(&[("BOOKING_IDEMPOTENCY__MAX_KEYS", "3")]);
    app.initialize(json!(1), 10).await;
    let body = |n: usize| json!({"eventId": 1, "userId": format!("u{n}")});
    let mut first = Vec::new();
    for n in 1..=5 {
        let answer = post_with_key(&app, "/api/book", &format!("k{n}"), body(n)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        first.push(answer);
    }
    // The cap is checked every second; the two oldest answers go, and their rows.
    assert_eq!(
        app.metric_reaching("booking_idempotency_keys_evicted_total", 2.0)
            .await,
        2.0
    );
    assert_eq!(
        app.metrics().await.get("booking_idempotency_keys"),
        Some(&3.0)
    );
    for _ in 0..100 {
        if app.rows_in("idempotency") == 3 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.rows_in("idempotency"), 3);

    // The three newest still replay, after a restart too.
    app.restart();
    for n in 3..=5 {
        let retry = post_with_key(&app, "/api/book", &format!("k{n}"), body(n)).await;
        assert_replay_of(&retry, &first[n - 1]);
    }
    // A retry of a forgotten one runs anew: u1 is booked already.
    let late = post_with_key(&app, "/api/book", "k1", body(1)).await;
    assert_eq!((late.status, replayed(&late)), (409, false), "{late:?}");
    assert_eq!(app.counts("1").await, (5, 0));

    // A lower cap applies to the answers kept from before a restart: only
    // the newest, k1's 409, is left.
    app.set_env("BOOKING_IDEMPOTENCY__MAX_KEYS", Some("1"));
    app.restart();
    let retry = post_with_key(&app, "/api/book", "k1", body(1)).await;
    assert_replay_of(&retry, &late);
    let retry = post_with_key(&app, "/api/book", "k5", body(5)).await;
    assert_eq!((retry.status, replayed(&retry)), (409, false), "{retry:?}");
}
