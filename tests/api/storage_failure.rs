//! A write that cannot be stored is answered 503 and leaves no trace; reads
//! go on working, and writes work again once the cause is gone.

use std::time::Duration;

use futures::future::join_all;
use rusqlite::Connection;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

const UNAVAILABLE: &str = "Storage unavailable";

#[actix_web::test]
async fn a_database_locked_too_long_refuses_writes_until_released() {
    let mut app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "100")]);
    app.initialize(json!(1), 2).await;
    app.book(json!(1), json!("a")).await;

    // Another process takes the write lock and keeps it.
    let intruder = Connection::open(app.database()).unwrap();
    intruder.busy_timeout(Duration::from_secs(5)).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let refused = app.book(json!(1), json!("b")).await;
    assert_eq!(
        (refused.status, refused.body),
        (503, json!({"error": UNAVAILABLE}))
    );
    let storm = join_all((0..20).map(|i| app.book(json!(1), json!(format!("s{i}"))))).await;
    assert!(storm.iter().all(|a| a.status == 503), "{storm:?}");
    assert_eq!(app.cancel(json!(1), json!("a")).await.status, 503);
    assert_eq!(app.initialize(json!(2), 5).await.status, 503);

    // Reads work, and show only what is stored.
    assert_eq!(app.counts("1").await, (1, 0));
    assert_eq!(app.user_status("1", "a").await.body["status"], "booked");
    assert_eq!(app.user_status("1", "b").await.status, 404);
    assert_eq!(app.status("2").await.status, 404);

    intruder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        app.book(json!(1), json!("b")).await.body["status"],
        "booked"
    );
    assert_eq!(app.book(json!(1), json!("s0")).await.body["position"], 1);
    assert_eq!(app.initialize(json!(2), 5).await.status, 201);

    app.restart();
    assert_eq!(app.counts("1").await, (2, 1));
    assert_eq!(app.user_status("1", "s1").await.status, 404);
}

#[actix_web::test]
async fn a_full_disk_refuses_writes_and_acknowledges_only_what_is_stored() {
    // A database capped at 12 pages of 4 KiB fills up after some 150 long-named bookings.
    let mut app = spawn_app_with(&[("BOOKING_MAX_PAGE_COUNT", "12")]);
    app.initialize(json!(1), 100_000).await;
    let mut acknowledged = Vec::new();
    let refused = loop {
        let user = format!("{:0>200}", acknowledged.len());
        let answer = app.book(json!(1), json!(user)).await;
        match answer.status {
            200 => acknowledged.push(user),
            503 => break user,
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
        assert!(acknowledged.len() < 5_000, "the size cap never took effect");
    };
    assert!(!acknowledged.is_empty());
    let stored = acknowledged.len() as u64;
    assert_eq!(
        app.counts("1").await,
        (stored, 0),
        "nothing unstored is counted"
    );
    assert_eq!(app.user_status("1", &refused).await.status, 404);
    // The same row still does not fit: refused again, still not counted.
    assert_eq!(
        app.book(json!(1), json!(refused)).await.body,
        json!({"error": UNAVAILABLE})
    );
    assert_eq!(app.counts("1").await, (stored, 0));

    // Room again (here: the cap lifted), and writes work; every acknowledged booking is there.
    app.set_env("BOOKING_MAX_PAGE_COUNT", None);
    app.restart();
    assert_eq!(app.counts("1").await, (stored, 0));
    assert_eq!(
        app.user_status("1", &acknowledged[stored as usize - 1])
            .await
            .body["status"],
        "booked"
    );
    assert_eq!(app.user_status("1", &refused).await.status, 404);
    assert_eq!(
        app.book(json!(1), json!(refused)).await.body["status"],
        "booked"
    );
}

#[actix_web::test]
async fn failures_amid_a_storm_acknowledge_exactly_what_is_stored() {
    // Near the cap, rows fit or not depending on their size, so commits fail
    // and succeed in turn while bookings are decided on top of the failed ones. None of those may be acknowledged, and nothing
    // acknowledged may be missing.
    let mut app = spawn_app_with(&[
        ("BOOKING_MAX_PAGE_COUNT", "12"),
        // Many small transactions, so failed and successful ones alternate.
        ("BOOKING_COMMIT_BATCH_LIMIT", "4"),
    ]);
    app.initialize(json!(1), 60).await;
    // Ids of mixed lengths: after a long row fails, a shorter one may still fit.
    let users: Vec<String> = (0..400usize)
        .map(|i| format!("{i:x>width$}", width = 1 + i * 37 % 250))
        .collect();
    let answers = join_all(users.iter().map(|user| app.book(json!(1), json!(user)))).await;
    assert!(
        answers.iter().all(|a| a.status == 200 || a.status == 503),
        "{answers:?}"
    );
    let acknowledged: Vec<(&String, &serde_json::Value)> = users
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.status == 200)
        .map(|(u, a)| (u, &a.body))
        .collect();
    let refused = answers.len() - acknowledged.len();
    assert!(refused > 0, "the cap was never reached");

    app.set_env("BOOKING_MAX_PAGE_COUNT", None);
    app.restart();
    let (booked, waiting) = app.counts("1").await;
    assert_eq!(
        booked + waiting,
        acknowledged.len() as u64,
        "stored = acknowledged, no more, no less"
    );
    assert!(
        booked <= 60 && (waiting == 0 || booked == 60),
        "{booked} booked, {waiting} waiting"
    );
    for (user, told) in acknowledged {
        let stored = app.user_status("1", user).await.body;
        assert_eq!(
            (&stored["status"], &stored["position"]),
            (&told["status"], &told["position"]),
            "{user}"
        );
    }
}

#[actix_web::test]
async fn a_database_that_cannot_be_recovered_stops_the_server_before_it_is_ready() {
    let mut app = spawn_app();
    app.initialize(json!("known"), 1).await;
    app.stop_with("TERM");
    // An order of an event that was never created: no state can be rebuilt from it.
    let tamper = Connection::open(app.database()).unwrap();
    tamper
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO order_log (event_id, user_id, status) VALUES ('ghost', 'u1', 'booked');",
        )
        .unwrap();
    drop(tamper);

    app.start();
    let status = app.wait_exit();
    assert!(!status.success(), "exit status {status}");
    let log = app.log();
    assert!(
        log.contains("cannot recover from the database") && log.contains("ghost"),
        "{log}"
    );
}
