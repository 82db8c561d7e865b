//! The PostgreSQL backend (`storage.backend = "postgres"`): the booking
//! contract, recovery and idempotent replays from what PostgreSQL holds,
//! concurrent starts on one database, and connections that break.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, unstarted_app_with, TestApp};
use crate::postgres_server::{postgres_database, PostgresDatabase};

/// A server on its own new PostgreSQL database, or `None` (skipped).
fn spawn_on_postgres(extra: &[(&str, &str)]) -> Option<(TestApp, PostgresDatabase)> {
    let database = postgres_database()?;
    let app = spawn_on(&database, extra);
    Some((app, database))
}

fn spawn_on(database: &PostgresDatabase, extra: &[(&str, &str)]) -> TestApp {
    let env = database.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    spawn_app_with(&env)
}

async fn book_with_key(
    app: &TestApp,
    event: &str,
    user: &str,
    key: &str,
) -> crate::helpers::Answer {
    app.request(
        "POST",
        "/api/book",
        &[("Idempotency-Key", key)],
        Some(&json!({"eventId": event, "userId": user})),
    )
    .await
}

#[actix_web::test]
async fn the_booking_contract_holds_on_postgres_and_survives_a_restart() {
    let Some((mut app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.until_ready().await;
    assert_eq!(app.initialize(json!("gig"), 2).await.status, 201);
    assert_eq!(app.initialize(json!("gig"), 2).await.status, 409);
    assert_eq!(
        app.book(json!("gig"), json!("a")).await.body["status"],
        "booked"
    );
    assert_eq!(
        app.book(json!("gig"), json!("b")).await.body["status"],
        "booked"
    );
    let waiting = app.book(json!("gig"), json!("c")).await;
    assert_eq!(
        waiting.body,
        json!({"status": "waiting", "userId": "c", "position": 1})
    );
    assert_eq!(app.book(json!("gig"), json!("d")).await.body["position"], 2);
    assert_eq!(app.book(json!("gig"), json!("a")).await.status, 409);
    let keyed = book_with_key(&app, "gig", "e", "key-e").await;
    assert_eq!(keyed.body["position"], 3);
    // The resource routes, on the same storage.
    let created = app
        .post(
            "/api/events",
            &json!({"eventId": "show", "totalTickets": 1}),
        )
        .await;
    assert_eq!(created.status, 201);
    let booked = app
        .post("/api/events/show/bookings", &json!({"userId": "x"}))
        .await;
    assert_eq!(booked.status, 201);
    let cancelled = app
        .request("DELETE", "/api/events/gig/bookings/a", &[], None)
        .await;
    assert_eq!(
        cancelled.body,
        json!({"status": "reassigned", "userId": "c", "cancelledUserId": "a"}),
        "{cancelled:?}"
    );
    assert_eq!(app.counts("gig").await, (2, 2));

    // What PostgreSQL holds: the log, the counts beside each event, the key.
    assert_eq!(
        database.sql("SELECT id, booked, waiting FROM events ORDER BY created"),
        "gig|2|2\nshow|1|0"
    );
    assert_eq!(database.sql("SELECT count(*) FROM idempotency"), "1");

    // A restart reads everything back from PostgreSQL.
    app.restart();
    app.until_ready().await;
    assert_eq!(app.counts("gig").await, (2, 2));
    let standing = |user: &'static str| {
        let app = &app;
        async move { app.user_status("gig", user).await.body }
    };
    assert_eq!(standing("a").await["status"], "cancelled");
    assert_eq!(standing("c").await["status"], "booked");
    assert_eq!(standing("d").await["position"], 1);
    assert_eq!(standing("e").await["position"], 2);
    // The keyed booking replays its first answer, from PostgreSQL.
    let replayed = book_with_key(&app, "gig", "e", "key-e").await;
    assert_eq!(replayed.body, keyed.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    let listed = app.get("/api/events?limit=1").await;
    assert_eq!(listed.body["events"][0]["eventId"], "gig");
    let next = listed.body["next"]
        .as_str()
        .expect("a second page")
        .to_string();
    let rest = app.get(&format!("/api/events?after={next}")).await;
    assert_eq!(rest.body["events"][0]["eventId"], "show");
    assert_eq!(rest.body["events"][0]["bookedTickets"], 1);
}

#[actix_web::test]
async fn simultaneous_bookings_never_oversell_and_all_are_stored() {
    let Some((app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.initialize(json!("drop"), 50).await;
    let answers = join_all((0..300).map(|i| app.book(json!("drop"), json!(format!("u{i}"))))).await;
    let booked = answers
        .iter()
        .filter(|a| a.body["status"] == "booked")
        .count();
    let mut positions: Vec<u64> = answers
        .iter()
        .filter_map(|a| a.body["position"].as_u64())
        .collect();
    positions.sort_unstable();
    assert_eq!(booked, 50);
    assert_eq!(positions, (1..=250).collect::<Vec<_>>());
    assert_eq!(
        database.sql("SELECT status, count(*) FROM order_log GROUP BY status ORDER BY status"),
        "booked|50\nwaiting|250"
    );
}

#[actix_web::test]
async fn instances_starting_at_once_on_one_database_create_its_schema_once() {
    let Some(database) = postgres_database() else {
        return;
    };
    let env = database.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut apps: Vec<TestApp> = (0..3).map(|_| unstarted_app_with(&env)).collect();
    TestApp::start_together(&mut apps);
    for app in &apps {
        app.until_ready().await;
    }
    assert_eq!(database.sql("SELECT version FROM booking_schema"), "1");
    // Creations of all instances take one order.
    for (i, app) in apps.iter().enumerate() {
        assert_eq!(app.initialize(json!(format!("e{i}")), 1).await.status, 201);
    }
    assert_eq!(
        database.sql("SELECT string_agg(created::text, ',' ORDER BY created) FROM events"),
        "1,2,3"
    );
}

#[actix_web::test]
async fn a_terminated_session_acknowledges_nothing_unstored_and_the_server_reconnects() {
    let Some((app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.initialize(json!("gig"), 1000).await;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for round in 0..4 {
        // The sessions are ended while bookings are on their way to them.
        let terminate = {
            let database = database.clone();
            actix_web::rt::task::spawn_blocking(move || {
                database.sql(&format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = '{}' AND application_name = 'event-booking'",
                    database.name
                ))
            })
        };
        let bookings =
            join_all((0..100).map(|i| app.book(json!("gig"), json!(format!("r{round}-{i}")))));
        let (answers, terminated) = futures::join!(bookings, terminate);
        assert_ne!(terminated.unwrap(), "0", "the server's sessions were found");
        for (i, answer) in answers.iter().enumerate() {
            match answer.status {
                200 => acknowledged.push(format!("r{round}-{i}")),
                503 => {
                    refused += 1;
                    assert_eq!(answer.body["code"], "storage_unavailable", "{answer:?}");
                }
                other => panic!("{other}: {answer:?}"),
            }
        }
    }
    // Writes resume without a restart (a retry or two: the first request
    // after a lost session may find the event reloading), and every
    // acknowledged one is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let after = app.book(json!("gig"), json!("after")).await;
        if after.status != 503 || std::time::Instant::now() > deadline {
            break after;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(after.status, 200, "{after:?}");
    acknowledged.push("after".into());
    let stored: Vec<String> = database
        .sql("SELECT user_id FROM order_log")
        .lines()
        .map(String::from)
        .collect();
    for user in &acknowledged {
        assert!(stored.contains(user), "{user} acknowledged, not stored");
    }
    let status: Value = app.status("gig").await.body;
    assert_eq!(status["bookedTickets"], stored.len());
    eprintln!("{refused} of 400 refused while their session ended");
}

#[test]
fn the_postgres_backend_without_a_url_is_refused_at_start() {
    let mut app = unstarted_app_with(&[("BOOKING_STORAGE__BACKEND", "postgres")]);
    let exited = app.start_to_exit();
    assert!(!exited.success());
    assert!(
        app.log().contains("storage.postgres_url must be set"),
        "{}",
        app.log()
    );
}

/// Polls `book` until it is answered with something other than `503
/// event_elsewhere`, for up to 15 s.
async fn book_once_free(app: &TestApp, event: &str, user: &str) -> crate::helpers::Answer {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let answer = app.book(json!(event), json!(user)).await;
        if answer.body["code"] != "event_elsewhere" || std::time::Instant::now() > deadline {
            return answer;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn one_instance_decides_for_an_event_at_a_time() {
    let Some(database) = postgres_database() else {
        return;
    };
    // A lets its events go after a second idle; B keeps them.
    let a = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "1")]);
    let mut b = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    assert_eq!(a.initialize(json!("gig"), 3).await.status, 201);
    assert_eq!(a.book(json!("gig"), json!("u1")).await.status, 200);

    // A owns it: B refuses, for writes and reads alike, and changes nothing.
    let refused = b.book(json!("gig"), json!("u2")).await;
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (503, &json!("event_elsewhere")),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(b.status("gig").await.body["code"], "event_elsewhere");
    assert_eq!(
        b.initialize(json!("gig"), 3).await.body["code"],
        "event_elsewhere"
    );

    // Once A passivated the event, B takes it, from what A committed.
    a.metric_reaching("booking_active_events", 0.0).await;
    let booked = book_once_free(&b, "gig", "u2").await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    assert_eq!(b.counts("gig").await, (2, 0));
    assert_eq!(
        a.book(json!("gig"), json!("u3")).await.body["code"],
        "event_elsewhere"
    );

    // B dies: PostgreSQL ends its session and the lock with it; A takes over.
    b.send_signal("KILL");
    let booked = book_once_free(&a, "gig", "u3").await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    assert_eq!(a.counts("gig").await, (3, 0));
    assert_eq!(
        database.sql("SELECT user_id FROM order_log ORDER BY seq"),
        "u1\nu2\nu3"
    );
    b.wait_exit();
}
