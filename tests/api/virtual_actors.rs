//! Events as virtual actors: read from the database when first asked for,
//! stopped when idle, and nothing a client can see changes for it.

use futures::channel::mpsc;
use futures::future::join_all;
use futures::StreamExt;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

const ACTIVE: &str = "booking_active_events";
const ACTIVATIONS: &str = "booking_event_activations_total";
const PASSIVATIONS: &str = "booking_event_passivations_total";

/// A server whose idle events stop after a second.
fn passivating_app() -> TestApp {
    spawn_app_with(&[("BOOKING_PASSIVATE_AFTER_SECS", "1")])
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    app.metrics().await.get(name).copied().unwrap_or(f64::NAN)
}

#[actix_web::test]
async fn nothing_is_read_at_start_and_an_event_is_activated_by_its_first_request() {
    let mut app = spawn_app();
    app.initialize(json!("a"), 1).await;
    app.initialize(json!("b"), 5).await;
    for (event, user) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
        assert_eq!(app.book(json!(event), json!(user)).await.status, 200);
    }
    app.restart();

    // The gauges count every stored event, though none is in memory.
    let metrics = app.metrics().await;
    let value = |name: &str| metrics.get(name).copied();
    assert_eq!(value("booking_events"), Some(2.0));
    assert_eq!(value("booking_booked_tickets"), Some(2.0));
    assert_eq!(value("booking_waiting_users"), Some(1.0));
    assert_eq!(value(ACTIVE), Some(0.0));
    assert_eq!(value(ACTIVATIONS), Some(0.0));

    // The first request reads the event; what it answers is what was stored.
    assert_eq!(app.counts("a").await, (1, 1));
    assert_eq!(metric(&app, ACTIVE).await, 1.0);
    let waiting = app.user_status("a", "a2").await;
    assert_eq!(
        (
            waiting.body["status"].clone(),
            waiting.body["position"].clone()
        ),
        (json!("waiting"), json!(1))
    );
    assert_eq!(app.user_status("b", "b1").await.body["status"], "booked");
    assert_eq!(metric(&app, ACTIVE).await, 2.0);
    assert_eq!(metric(&app, ACTIVATIONS).await, 2.0);
    // An unknown event is not found, and activates nothing.
    assert_eq!(app.book(json!("c"), json!("u")).await.status, 404);
    assert_eq!(metric(&app, ACTIVE).await, 2.0);
}

#[actix_web::test]
async fn an_idle_event_is_passivated_and_answered_from_the_database_next_time() {
    let app = passivating_app();
    app.initialize(json!("gig"), 2).await;
    for user in ["u1", "u2", "u3"] {
        assert_eq!(app.book(json!("gig"), json!(user)).await.status, 200);
    }
    assert_eq!(app.metric_reaching(PASSIVATIONS, 1.0).await, 1.0);
    assert_eq!(metric(&app, ACTIVE).await, 0.0);

    // Read again from the database, it decides as the actor that stopped would have.
    assert_eq!(app.counts("gig").await, (2, 1));
    assert_eq!(app.user_status("gig", "u3").await.body["position"], 1);
    let cancelled = app.cancel(json!("gig"), json!("u1")).await;
    assert_eq!(
        cancelled.body,
        json!({"status": "reassigned", "userId": "u3", "cancelledUserId": "u1"})
    );
    assert_eq!(app.counts("gig").await, (2, 0));
    // Created, then read again once.
    assert_eq!(metric(&app, ACTIVATIONS).await, 2.0);
    assert_eq!(metric(&app, ACTIVE).await, 1.0);
}

#[actix_web::test]
async fn bookings_racing_with_passivation_lose_nothing_and_oversell_nothing() {
    const TICKETS: u64 = 40;
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 25;
    let app = passivating_app();
    app.initialize(json!("gig"), TICKETS).await;
    let mut told: Vec<(String, Answer)> = Vec::new();
    for round in 0..ROUNDS {
        // The storm pauses until the event has passivated, then comes back at once.
        let passivated = metric(&app, PASSIVATIONS).await;
        assert_eq!(
            app.metric_reaching(PASSIVATIONS, passivated + 1.0).await,
            passivated + 1.0,
            "round {round}: never passivated"
        );
        let users: Vec<String> = (0..PER_ROUND).map(|n| format!("r{round}-{n}")).collect();
        let answers = join_all(users.iter().map(|u| app.book(json!("gig"), json!(u)))).await;
        told.extend(users.into_iter().zip(answers));
    }
    let booked = told
        .iter()
        .filter(|(_, a)| a.body["status"] == "booked")
        .count();
    assert_eq!(booked as u64, TICKETS, "one ticket each, no more");
    assert_eq!(
        app.counts("gig").await,
        (TICKETS, (ROUNDS * PER_ROUND) as u64 - TICKETS)
    );
    for (user, answer) in &told {
        assert_eq!(answer.status, 200, "{user}: {answer:?}");
        let stored = app.user_status("gig", user).await;
        assert_eq!(stored.body["status"], answer.body["status"], "{user}");
        assert_eq!(stored.body["position"], answer.body["position"], "{user}");
    }
}

#[actix_web::test]
async fn kill_9_while_events_activate_loses_no_acknowledged_booking() {
    const EVENTS: usize = 40;
    const TICKETS: u64 = 10;
    let mut app = passivating_app();
    for event in 0..EVENTS {
        app.initialize(json!(format!("e{event}")), TICKETS).await;
    }
    // Every event passive: the storm's first request to each one activates it.
    let all = EVENTS as f64;
    assert_eq!(app.metric_reaching(PASSIVATIONS, all).await, all);
    let (answered, mut answers) = mpsc::unbounded();
    let bookings = join_all((0..20 * EVENTS).map(|n| {
        let answered = answered.clone();
        let app = &app;
        async move {
            let (event, user) = (format!("e{}", n % EVENTS), format!("u{n}"));
            let answer = app.try_book(json!(event), json!(user)).await;
            if answer.is_some() {
                let _ = answered.unbounded_send(());
            }
            (event, user, answer)
        }
    }));
    let killer = async {
        for _ in 0..EVENTS {
            answers.next().await;
        }
        app.send_signal("KILL");
    };
    let (results, ()) = futures::join!(bookings, killer);
    app.wait_exit();
    assert!(
        results.iter().any(|(_, _, answer)| answer.is_none()),
        "the kill came after the storm; nothing was in flight"
    );

    app.start();
    let acknowledged: Vec<_> = results
        .iter()
        .filter_map(|(event, user, answer)| Some((event, user, answer.as_ref()?)))
        .filter(|(_, _, answer)| answer.status == 200)
        .collect();
    assert!(!acknowledged.is_empty());
    for (event, user, told) in &acknowledged {
        let stored = app.user_status(event, user).await;
        assert_eq!(
            stored.status, 200,
            "{event}/{user} acknowledged, not stored"
        );
        assert_eq!(stored.body["status"], told.body["status"], "{event}/{user}");
        assert_eq!(
            stored.body["position"], told.body["position"],
            "{event}/{user}"
        );
    }
    for event in 0..EVENTS {
        let (booked, _) = app.counts(&format!("e{event}")).await;
        assert!(booked <= TICKETS, "e{event} oversold: {booked}");
    }
}
