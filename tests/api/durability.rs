//! Acknowledged means stored: across restarts, `kill -9` and signals.

use futures::channel::mpsc;
use futures::future::join_all;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

/// Everything a client can see of these users at event `event`.
async fn snapshot(app: &TestApp, event: &str, users: &[&str]) -> Vec<Value> {
    let mut seen = vec![app.status(event).await.body];
    for user in users {
        let answer = app.user_status(event, user).await;
        seen.push(json!([answer.status, answer.body]));
    }
    seen
}

#[actix_web::test]
async fn a_restart_changes_nothing_a_client_can_see() {
    let mut app = spawn_app();
    app.initialize(json!(1), 2).await;
    app.initialize(json!("gig"), 1).await;
    for user in ["a", "b", "c", "d", "e", "f"] {
        app.book(json!(1), json!(user)).await;
    }
    app.cancel(json!(1), json!("d")).await; // leaves the queue
    app.cancel(json!(1), json!("a")).await; // ticket goes to c
    app.book(json!(1), json!("a")).await; // back of the queue
    app.book(json!("gig"), json!("x")).await;
    app.book(json!("gig"), json!("y")).await;
    app.cancel(json!("gig"), json!("x")).await;
    let users = ["a", "b", "c", "d", "e", "f", "never"];
    let before = (
        snapshot(&app, "1", &users).await,
        snapshot(&app, "gig", &["x", "y"]).await,
    );

    app.restart();
    let after = (
        snapshot(&app, "1", &users).await,
        snapshot(&app, "gig", &["x", "y"]).await,
    );
    assert_eq!(before, after);

    // The log's 14 rows hold 6 that later ones replaced: d's waiting, a's
    // booked and cancelled, c's waiting, x's booked, y's waiting. Recovery
    // found them; the idle store deletes them, leaving one row per user.
    assert_eq!(app.metric_reaching(COMPACTED, 6.0).await, 6.0);
    assert_eq!(app.rows_in("order_log"), 8);
    assert_eq!(
        (
            snapshot(&app, "1", &users).await,
            snapshot(&app, "gig", &["x", "y"]).await
        ),
        before
    );
    app.restart();
    assert_eq!(
        (
            snapshot(&app, "1", &users).await,
            snapshot(&app, "gig", &["x", "y"]).await
        ),
        before
    );
    assert_eq!(app.metrics().await.get(COMPACTED).unwrap_or(&0.0), &0.0);

    // The queue order survived: tickets go to e, then f, then a.
    for (holder, next) in [("b", "e"), ("c", "f"), ("e", "a")] {
        assert_eq!(
            app.cancel(json!(1), json!(holder)).await.body["userId"],
            next
        );
    }
}

/// Rows of the order log deleted by compaction since the server started.
const COMPACTED: &str = "booking_order_log_compacted_rows_total";

#[actix_web::test]
async fn a_running_server_compacts_its_log_after_enough_cancellations() {
    const CHURNED: usize = 150;
    let mut app = spawn_app_with(&[("BOOKING_COMPACTION_INTERVAL_ROWS", "100")]);
    app.initialize(json!("fest"), 1).await;
    for user in ["holder", "w1", "w2", "w3"] {
        app.book(json!("fest"), json!(user)).await;
    }
    // Each churned user joins the queue and leaves it: its second row
    // replaces its first. At 100 the log is read again, without a restart.
    let churned: Vec<String> = (0..CHURNED).map(|i| format!("churned-{i}")).collect();
    for user in &churned {
        let joined = app.book(json!("fest"), json!(user)).await;
        assert_eq!(joined.body["status"], "waiting", "{joined:?}");
        assert_eq!(app.cancel(json!("fest"), json!(user)).await.status, 200);
    }
    let mut users = vec!["holder", "w1", "w2", "w3"];
    users.extend(churned.iter().map(String::as_str));
    let before = snapshot(&app, "fest", &users).await;
    let compacted = app.metric_reaching(COMPACTED, 100.0).await;
    assert!(
        (100.0..=CHURNED as f64).contains(&compacted),
        "{compacted} rows compacted"
    );
    assert_eq!(
        app.rows_in("order_log"),
        (4 + 2 * CHURNED) as i64 - compacted as i64
    );
    assert_eq!(snapshot(&app, "fest", &users).await, before);

    // The queue order survived: the ticket goes to w1, then w2.
    app.restart();
    assert_eq!(snapshot(&app, "fest", &users).await, before);
    for (holder, next) in [("holder", "w1"), ("w1", "w2")] {
        let reassigned = app.cancel(json!("fest"), json!(holder)).await;
        assert_eq!(reassigned.body["userId"], next, "{reassigned:?}");
    }
}

#[actix_web::test]
async fn the_log_is_read_again_only_once_a_quarter_of_it_is_replaced() {
    let app = spawn_app_with(&[("BOOKING_COMPACTION_INTERVAL_ROWS", "100")]);
    app.initialize(json!("fest"), 400).await;
    let users: Vec<String> = (0..400).map(|i| format!("u{i}")).collect();
    join_all(
        users
            .iter()
            .map(|user| app.book(json!("fest"), json!(user))),
    )
    .await;
    // 120 cancellations: past the interval, but 120 of 520 rows are less
    // than a quarter. Reading 520 rows to delete 120 is not worth it yet.
    for user in &users[..120] {
        assert_eq!(app.cancel(json!("fest"), json!(user)).await.status, 200);
    }
    actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.metrics().await.get(COMPACTED), Some(&0.0));
    // At 134 of 534 rows it is a quarter: the log is read again. A few
    // more may be committed before the read starts.
    for user in &users[120..150] {
        assert_eq!(app.cancel(json!("fest"), json!(user)).await.status, 200);
    }
    let compacted = app.metric_reaching(COMPACTED, 134.0).await;
    assert!((134.0..=150.0).contains(&compacted), "{compacted}");
    assert_eq!(app.rows_in("order_log"), 550 - compacted as i64);
    assert_eq!(app.counts("fest").await, (250, 0));
}

#[actix_web::test]
async fn compaction_deletes_every_superseded_row_and_keeps_every_booking() {
    const CHURNED: u32 = 3_000;
    let mut app = spawn_app();
    app.initialize(json!("fest"), CHURNED.into()).await;
    // Each churned user books and cancels: half the log is superseded,
    // several compaction steps' worth.
    let client = &app;
    join_all((0..CHURNED).map(|i| async move {
        let user = json!(format!("churned-{i}"));
        assert_eq!(client.book(json!("fest"), user.clone()).await.status, 200);
        assert_eq!(client.cancel(json!("fest"), user).await.status, 200);
    }))
    .await;
    app.stop_with("TERM");

    app.start();
    // Bookings as compaction starts: each is decided and stored as usual.
    let answers =
        join_all((0..20).map(|i| app.book(json!("fest"), json!(format!("new-{i}"))))).await;
    for answer in &answers {
        assert_eq!(answer.body["status"], "booked", "{answer:?}");
    }
    assert_eq!(
        app.metric_reaching(COMPACTED, CHURNED.into()).await,
        f64::from(CHURNED)
    );
    assert_eq!(app.rows_in("order_log"), i64::from(CHURNED) + 20);

    app.restart();
    assert_eq!(app.counts("fest").await, (20, 0));
    for user in ["churned-0", "churned-2999"] {
        assert_eq!(
            app.user_status("fest", user).await.body["status"],
            "cancelled"
        );
    }
    for i in [0, 19] {
        let user = format!("new-{i}");
        assert_eq!(
            app.user_status("fest", &user).await.body["status"],
            "booked",
            "{user}"
        );
    }
}

/// Books `users` users at once and calls `interrupt` after `after` answers;
/// returns every answer that arrived (requests cut off by the interrupt have none).
async fn storm(
    app: &TestApp,
    users: usize,
    after: usize,
    interrupt: impl FnOnce(),
) -> Vec<(String, Option<Answer>)> {
    storm_with(app, users, async {}, after, interrupt).await
}

/// As `storm`, with `before` awaited alongside the bookings before counting answers.
async fn storm_with(
    app: &TestApp,
    users: usize,
    before: impl std::future::Future<Output = ()>,
    after: usize,
    interrupt: impl FnOnce(),
) -> Vec<(String, Option<Answer>)> {
    let (answered, mut answers) = mpsc::unbounded();
    let bookings = join_all((0..users).map(|i| {
        let answered = answered.clone();
        async move {
            let user = format!("storm-{i}");
            let answer = app.try_book(json!(1), json!(user)).await;
            if answer.is_some() {
                let _ = answered.unbounded_send(());
            }
            (user, answer)
        }
    }));
    let interrupter = async {
        before.await;
        for _ in 0..after {
            answers.next().await;
        }
        interrupt();
    };
    futures::join!(bookings, interrupter).0
}

/// Every acknowledged booking is stored with the standing it was told.
async fn assert_all_acknowledged_are_stored(
    app: &TestApp,
    results: &[(String, Option<Answer>)],
    tickets: u64,
) {
    let acknowledged: Vec<(&String, &Answer)> = results
        .iter()
        .filter_map(|(user, answer)| Some((user, answer.as_ref()?)))
        .filter(|(_, a)| a.status == 200)
        .collect();
    let lookups = join_all(
        acknowledged
            .iter()
            .map(|(user, _)| app.user_status("1", user)),
    )
    .await;
    for ((user, told), stored) in acknowledged.iter().zip(&lookups) {
        assert_eq!(
            stored.status, 200,
            "{user} was acknowledged but is not stored"
        );
        assert_eq!(stored.body["status"], told.body["status"], "{user}");
        // Everyone ahead of a waiting user was decided, hence committed, before it.
        assert_eq!(stored.body["position"], told.body["position"], "{user}");
    }
    let status = app.status("1").await.body;
    let booked = status["bookedTickets"].as_u64().unwrap();
    assert!(booked <= tickets, "oversold: {status}");
    let stored = booked + status["waitingListCount"].as_u64().unwrap();
    assert!(
        stored >= acknowledged.len() as u64,
        "{stored} stored < {} acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{} bookings acknowledged of {} sent; all {} found after restart ({stored} stored in all)",
        acknowledged.len(),
        results.len(),
        lookups.len()
    );
}

#[actix_web::test]
async fn kill_9_in_a_booking_storm_loses_no_acknowledged_booking() {
    let mut app = spawn_app();
    app.initialize(json!(1), 300).await;
    let results = storm(&app, 3000, 500, || app.send_signal("KILL")).await;
    app.wait_exit();
    let unanswered = results
        .iter()
        .filter(|(_, answer)| answer.is_none())
        .count();
    assert!(
        unanswered > 0,
        "the kill came after the storm; nothing was in flight"
    );
    assert!(
        results.iter().flat_map(|(_, a)| a).all(|a| a.status == 200),
        "no error before the kill"
    );

    app.start();
    assert_all_acknowledged_are_stored(&app, &results, 300).await;
}

#[actix_web::test]
async fn kill_9_while_commits_stall_loses_no_acknowledged_booking() {
    // Another connection holds the write lock: the server decides bookings in
    // memory but cannot commit them, so none may be acknowledged yet.
    let mut app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "20000")]);
    app.initialize(json!(1), 300).await;
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let release_when_decided = async {
        wait_for_decisions(&app, 400).await;
        intruder.execute_batch("ROLLBACK").unwrap();
    };
    let results = storm_with(&app, 3000, release_when_decided, 50, || {
        app.send_signal("KILL")
    })
    .await;
    app.wait_exit();

    app.start();
    assert_all_acknowledged_are_stored(&app, &results, 300).await;
}

#[actix_web::test]
async fn sigterm_finishes_the_requests_in_flight_and_exits_0() {
    // Commits stall behind another connection's lock, so the bookings decided
    // when SIGTERM arrives are all still in flight; each must still get its 200.
    let mut app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "20000")]);
    app.initialize(json!(1), 300).await;
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let in_flight = std::cell::Cell::new(0);
    let terminate_when_decided = async {
        let decided = wait_for_decisions(&app, 400).await;
        app.send_signal("TERM");
        in_flight.set(decided);
        intruder.execute_batch("ROLLBACK").unwrap();
    };
    let results = storm_with(&app, 1000, terminate_when_decided, 0, || ()).await;
    let status = app.wait_exit();
    assert!(status.success(), "exit status {status}");
    let answers: Vec<&Answer> = results.iter().flat_map(|(_, answer)| answer).collect();
    assert!(
        answers.iter().all(|a| a.status == 200),
        "a request in flight failed"
    );
    assert!(
        answers.len() >= in_flight.get(),
        "{} in flight at SIGTERM, {} answered",
        in_flight.get(),
        answers.len()
    );

    app.start();
    assert_all_acknowledged_are_stored(&app, &results, 300).await;
}

/// Waits (by asking) until at least `count` bookings of event 1 are decided,
/// committed or not, and returns how many are.
async fn wait_for_decisions(app: &TestApp, count: u64) -> usize {
    for _ in 0..100_000 {
        let status = app.status("1").await.body;
        let decided = status["bookedTickets"].as_u64().unwrap()
            + status["waitingListCount"].as_u64().unwrap();
        if decided >= count {
            return decided as usize;
        }
    }
    panic!("fewer than {count} bookings were ever decided");
}

#[actix_web::test]
async fn sigint_stops_gracefully_too() {
    let mut app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("u")).await;
    let status = app.stop_with("INT");
    assert!(status.success(), "exit status {status}");
    app.start();
    assert_eq!(app.user_status("1", "u").await.body["status"], "booked");
}
