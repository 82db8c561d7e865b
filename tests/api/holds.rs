//! Holds: a ticket set aside while the buyer pays, confirmed, released, or
//! lapsed at its expiry by the event's actor; durable across `kill -9`.

use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

async fn create_event(app: &TestApp, event: &str, total_tickets: u64) {
    let body = json!({"eventId": event, "totalTickets": total_tickets});
    assert_eq!(app.post("/api/events", &body).await.status, 201);
}

async fn hold(app: &TestApp, event: &str, body: Value) -> Answer {
    app.post(&format!("/api/events/{event}/holds"), &body).await
}

async fn confirm(app: &TestApp, event: &str, user: &str) -> Answer {
    let path = format!("/api/events/{event}/holds/{user}/confirm");
    app.request("POST", &path, &[], None).await
}

async fn release(app: &TestApp, event: &str, user: &str) -> Answer {
    let path = format!("/api/events/{event}/holds/{user}");
    app.request("DELETE", &path, &[], None).await
}

async fn standing(app: &TestApp, event: &str, user: &str) -> Value {
    let answer = app
        .get(&format!("/api/events/{event}/bookings/{user}"))
        .await;
    assert_eq!(answer.status, 200, "standing of {user}: {:?}", answer.body);
    answer.body
}

/// (booked, held, available, waiting) as the event's status reports them.
async fn counts(app: &TestApp, event: &str) -> (u64, u64, u64, u64) {
    let status = app.get(&format!("/api/events/{event}")).await.body;
    let count = |field: &str| status[field].as_u64().expect(field);
    (
        count("bookedTickets"),
        count("heldTickets"),
        count("availableTickets"),
        count("waitingListCount"),
    )
}

fn instant(value: &Value) -> Timestamp {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("an RFC 3339 instant, not {value}"))
}

/// Polls `user`'s standing until its status is `status`, for up to `within`.
async fn standing_becomes(
    app: &TestApp,
    event: &str,
    user: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = standing(app, event, user).await;
        if now["status"] == status || std::time::Instant::now() > deadline {
            return now;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_hold_sets_a_ticket_aside_until_it_is_confirmed() {
    let app = spawn_app();
    create_event(&app, "gig", 2).await;
    let before = Timestamp::now();
    let held = hold(&app, "gig", json!({"userId": "ann", "holdSecs": 120})).await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    assert_eq!(
        (&held.body["status"], &held.body["userId"]),
        (&json!("held"), &json!("ann"))
    );
    let expires_at = instant(&held.body["expiresAt"]);
    assert!(held.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    // The server counts whole milliseconds: its clock may read a little before ours.
    let expected = before + Duration::from_secs(120) - Duration::from_millis(1);
    assert!(
        expires_at >= expected && expires_at <= expected + Duration::from_secs(5),
        "expiresAt {expires_at} is 120 s after the request ({before})"
    );
    assert_eq!(held.header("location"), Some("/api/events/gig/holds/ann"));
    // Counted apart from the booked tickets, and not available.
    assert_eq!(counts(&app, "gig").await, (0, 1, 1, 0));
    assert_eq!(app.status("gig").await.body["heldTickets"], 1);
    let shown = json!({"eventId": "gig", "userId": "ann", "status": "held",
                       "expiresAt": held.body["expiresAt"]});
    assert_eq!(standing(&app, "gig", "ann").await, shown);
    assert_eq!(app.get("/api/events/gig/holds/ann").await.body, shown);
    assert_eq!(app.user_status("gig", "ann").await.body, shown);

    let confirmed = confirm(&app, "gig", "ann").await;
    assert_eq!(
        (confirmed.status, &confirmed.body),
        (200, &json!({"status": "booked", "userId": "ann"}))
    );
    assert_eq!(standing(&app, "gig", "ann").await["status"], "booked");
    assert_eq!(counts(&app, "gig").await, (1, 0, 1, 0));
    let again = confirm(&app, "gig", "ann").await;
    assert_eq!(
        (again.status, &again.body["error"], &again.body["code"]),
        (404, &json!("Hold not found"), &json!("hold_not_found"))
    );
    // Without `holdSecs`, the server's `hold_secs` (600 by default).
    let default = hold(&app, "gig", json!({"userId": "bob"})).await;
    let lasts = instant(&default.body["expiresAt"]).duration_since(Timestamp::now());
    assert!(lasts.as_secs() > 590 && lasts.as_secs() <= 600, "{lasts:?}");
}

#[actix_web::test]
async fn one_hold_per_user_and_none_beside_a_ticket_or_a_place() {
    let app = spawn_app();
    create_event(&app, "gig", 2).await;
    hold(&app, "gig", json!({"userId": "ann"})).await;
    let code = |answer: Answer| (answer.status, answer.body["code"].clone());
    assert_eq!(
        code(hold(&app, "gig", json!({"userId": "ann"})).await),
        (409, json!("already_holding"))
    );
    assert_eq!(
        code(app.book(json!("gig"), json!("ann")).await),
        (409, json!("already_holding"))
    );
    assert_eq!(
        app.book(json!("gig"), json!("ann")).await.body["error"],
        "User already holds a ticket"
    );
    app.book(json!("gig"), json!("bob")).await;
    assert_eq!(
        code(hold(&app, "gig", json!({"userId": "bob"})).await),
        (409, json!("already_booked"))
    );
    // Sold out (one booked, one held): a hold gets a place in the queue, as a booking would.
    let queued = hold(&app, "gig", json!({"userId": "cy"})).await;
    assert_eq!(
        (queued.status, &queued.body),
        (
            200,
            &json!({"status": "waiting", "userId": "cy", "position": 1})
        )
    );
    assert_eq!(queued.header("location"), None);
    assert_eq!(
        code(hold(&app, "gig", json!({"userId": "cy"})).await),
        (409, json!("already_waiting"))
    );
    assert_eq!(counts(&app, "gig").await, (1, 1, 0, 1));
}

#[actix_web::test]
async fn a_released_hold_goes_to_the_head_of_the_queue_else_back_on_sale() {
    let app = spawn_app();
    create_event(&app, "gig", 1).await;
    hold(&app, "gig", json!({"userId": "ann"})).await;
    app.book(json!("gig"), json!("bob")).await;
    let released = release(&app, "gig", "ann").await;
    assert_eq!(
        (released.status, &released.body),
        (200, &json!({"status": "released", "userId": "ann"}))
    );
    assert_eq!(standing(&app, "gig", "ann").await["status"], "cancelled");
    assert_eq!(standing(&app, "gig", "bob").await["status"], "booked");
    assert_eq!(counts(&app, "gig").await, (1, 0, 0, 0));
    let again = release(&app, "gig", "ann").await;
    assert_eq!(
        (again.status, &again.body["code"]),
        (404, &json!("hold_not_found"))
    );
    assert_eq!(release(&app, "gig", "nobody").await.status, 404);
    assert_eq!(
        confirm(&app, "gig", "bob").await.status,
        404,
        "bob booked, not held"
    );

    // A cancel of a held user releases the hold, on both cancel routes.
    create_event(&app, "fair", 1).await;
    hold(&app, "fair", json!({"userId": "h1"})).await;
    let cancelled = app.cancel(json!("fair"), json!("h1")).await;
    assert_eq!(
        (cancelled.status, &cancelled.body),
        (200, &json!({"status": "cancelled", "userId": "h1"}))
    );
    assert_eq!(counts(&app, "fair").await, (0, 0, 1, 0));
    hold(&app, "fair", json!({"userId": "h2"})).await;
    app.book(json!("fair"), json!("w")).await;
    let deleted = app
        .request("DELETE", "/api/events/fair/bookings/h2", &[], None)
        .await;
    assert_eq!(
        (deleted.status, &deleted.body),
        (
            200,
            &json!({"status": "reassigned", "userId": "w", "cancelledUserId": "h2"})
        )
    );
    assert_eq!(counts(&app, "fair").await, (1, 0, 0, 0));
}

#[actix_web::test]
async fn a_hold_lapses_by_itself_at_its_expiry_and_its_ticket_goes_to_the_queue() {
    let app = spawn_app();
    create_event(&app, "gig", 1).await;
    let held = hold(&app, "gig", json!({"userId": "ann", "holdSecs": 1})).await;
    let expires_at = instant(&held.body["expiresAt"]);
    app.book(json!("gig"), json!("bob")).await;
    let lapsed = standing_becomes(&app, "gig", "ann", "expired", Duration::from_secs(10)).await;
    assert_eq!(
        lapsed,
        json!({"eventId": "gig", "userId": "ann", "status": "expired",
               "expiredAt": held.body["expiresAt"]}),
        "lapsed at its expiry, and it shows"
    );
    let seen_at = Timestamp::now();
    assert!(seen_at >= expires_at, "not before its time");
    assert_eq!(standing(&app, "gig", "bob").await["status"], "booked");
    assert_eq!(counts(&app, "gig").await, (1, 0, 0, 0));
    let late = confirm(&app, "gig", "ann").await;
    assert_eq!(
        (late.status, &late.body["error"]),
        (404, &json!("Hold not found"))
    );
    assert_eq!(release(&app, "gig", "ann").await.status, 404);
    assert_eq!(app.metric_reaching(LAPSED, 1.0).await, 1.0);

    // With nobody waiting, the ticket goes back on sale; the lapsed user may hold again.
    create_event(&app, "fair", 1).await;
    hold(&app, "fair", json!({"userId": "ann", "holdSecs": 1})).await;
    standing_becomes(&app, "fair", "ann", "expired", Duration::from_secs(10)).await;
    assert_eq!(counts(&app, "fair").await, (0, 0, 1, 0));
    assert_eq!(
        hold(&app, "fair", json!({"userId": "ann"})).await.status,
        201
    );
}

#[actix_web::test]
async fn a_hold_lapses_on_time_with_no_request_to_wake_it() {
    let app = spawn_app();
    create_event(&app, "gig", 1).await;
    hold(&app, "gig", json!({"userId": "ann", "holdSecs": 1})).await;
    // Only /metrics is read: no request reaches the event's actor, whose timer lapses the hold.
    assert_eq!(app.metric_reaching(LAPSED, 1.0).await, 1.0);
    assert_eq!(app.metrics().await[HELD], 0.0);
}

#[actix_web::test]
async fn bad_hold_requests_are_refused_and_change_nothing() {
    let app = spawn_app();
    create_event(&app, "gig", 1).await;
    for (secs, says) in [
        (json!(0), "holdSecs must not be zero"),
        (
            json!(86_401),
            "holdSecs is too large: at most 86400, not 86401",
        ),
        (json!(1.5), "holdSecs must be a whole number, not 1.5"),
        (
            json!("60"),
            "holdSecs must be a whole number from 1 to 86400, not a string",
        ),
        (json!(-1), "holdSecs must not be negative, not -1"),
    ] {
        let refused = hold(&app, "gig", json!({"userId": "ann", "holdSecs": secs})).await;
        assert_eq!(
            (refused.status, &refused.body["details"]),
            (400, &json!(says)),
            "holdSecs {secs}"
        );
    }
    assert_eq!(
        hold(&app, "gig", json!({})).await.body["details"],
        "userId is required"
    );
    let unknown = hold(&app, "nope", json!({"userId": "ann"})).await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("event_not_found"))
    );
    assert_eq!(confirm(&app, "nope", "ann").await.status, 404);
    assert_eq!(counts(&app, "gig").await, (0, 0, 1, 0));
    // The longest hold is a day; `null` is the default.
    let day = hold(&app, "gig", json!({"userId": "ann", "holdSecs": 86_400})).await;
    assert_eq!(day.status, 201);
    let null = hold(&app, "gig", json!({"userId": "bob", "holdSecs": null})).await;
    assert_eq!(null.status, 200, "sold out: bob waits");
}

#[actix_web::test]
async fn hold_requests_with_an_idempotency_key_are_answered_once() {
    let app = spawn_app();
    create_event(&app, "gig", 1).await;
    let keyed = |key: &'static str| [("idempotency-key", key)];
    let body = json!({"userId": "ann", "holdSecs": 60});
    let first = app
        .request("POST", "/api/events/gig/holds", &keyed("h-1"), Some(&body))
        .await;
    let retry = app
        .request("POST", "/api/events/gig/holds", &keyed("h-1"), Some(&body))
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(
        (retry.status, &retry.body),
        (201, &first.body),
        "replayed, same expiry"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.header("location"), Some("/api/events/gig/holds/ann"));
    // The same key for another request: refused, not replayed.
    let other = app
        .request(
            "POST",
            "/api/events/gig/holds/ann/confirm",
            &keyed("h-1"),
            None,
        )
        .await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    let confirm_path = "/api/events/gig/holds/ann/confirm";
    let first = app.request("POST", confirm_path, &keyed("c-1"), None).await;
    let retry = app.request("POST", confirm_path, &keyed("c-1"), None).await;
    assert_eq!(
        (first.status, retry.status),
        (200, 200),
        "the retry replays the booking"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let release_path = "/api/events/gig/holds/ann";
    let first = app
        .request("DELETE", release_path, &keyed("r-1"), None)
        .await;
    let retry = app
        .request("DELETE", release_path, &keyed("r-1"), None)
        .await;
    assert_eq!(
        (first.status, retry.status),
        (404, 404),
        "ann booked: no hold"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}

#[actix_web::test]
async fn holds_survive_kill_9_and_those_that_lapsed_meanwhile_lapse_at_the_start() {
    let mut app = spawn_app();
    create_event(&app, "gig", 2).await;
    let short = hold(&app, "gig", json!({"userId": "short", "holdSecs": 2})).await;
    let long = hold(&app, "gig", json!({"userId": "long", "holdSecs": 3600})).await;
    app.book(json!("gig"), json!("waiter")).await;
    app.send_signal("KILL");
    app.wait_exit();
    // Down until the short hold's time has passed.
    let expires_at = instant(&short.body["expiresAt"]);
    while Timestamp::now() <= expires_at {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    app.start();
    // Lapsed at the start, before any request reached the event.
    assert_eq!(app.metric_reaching(LAPSED, 1.0).await, 1.0);
    assert_eq!(
        standing(&app, "gig", "short").await["expiredAt"],
        short.body["expiresAt"]
    );
    assert_eq!(standing(&app, "gig", "waiter").await["status"], "booked");
    assert_eq!(
        standing(&app, "gig", "long").await,
        json!({"eventId": "gig", "userId": "long", "status": "held",
               "expiresAt": long.body["expiresAt"]}),
        "a live hold keeps its expiry"
    );
    assert_eq!(counts(&app, "gig").await, (1, 1, 0, 0));
    assert_eq!(confirm(&app, "gig", "long").await.status, 200);
    app.send_signal("KILL");
    app.wait_exit();
    app.start();
    assert_eq!(standing(&app, "gig", "long").await["status"], "booked");
    assert_eq!(counts(&app, "gig").await, (2, 0, 0, 0));
}

#[actix_web::test]
async fn a_storm_of_holds_confirms_releases_and_bookings_keeps_every_invariant() {
    let app = spawn_app_with(&[("BOOKING_HOLD_SECS", "2")]);
    storm(&app, "assign", json!({"mode": "assign"}), 300).await;
}

#[actix_web::test]
async fn a_storm_on_an_event_that_offers_its_freed_tickets_keeps_every_invariant() {
    let app = spawn_app_with(&[("BOOKING_HOLD_SECS", "2")]);
    // Fewer users: each lapsed offer passes its ticket one place down the
    // queue a second, and the test waits until every offer has lapsed.
    storm(&app, "offer", json!({"mode": "offer", "offerSecs": 1}), 60).await;
}

/// Holds, confirms, releases, lapses and bookings of `users` on one event
/// of 20 tickets at once; checked while the holds lapse, and once all have.
async fn storm(app: &TestApp, event: &str, waiting_list: Value, users: usize) {
    const TICKETS: u64 = 20;
    let body = json!({"eventId": event, "totalTickets": TICKETS, "waitingList": waiting_list});
    assert_eq!(app.post("/api/events", &body).await.status, 201);
    let requests = (0..users).map(|n| async move {
        let user = format!("u{n}");
        match n % 4 {
            0 => app.book(json!(event), json!(user)).await.status,
            1 => {
                hold(app, event, json!({"userId": user})).await;
                confirm(app, event, &user).await.status
            }
            2 => {
                hold(app, event, json!({"userId": user})).await;
                release(app, event, &user).await.status
            }
            // Held and left to lapse.
            _ => hold(app, event, json!({"userId": user})).await.status,
        }
    });
    let statuses = join_all(requests).await;
    assert!(
        statuses.iter().all(|s| [200, 201, 404].contains(s)),
        "every request was answered: {statuses:?}"
    );
    check_counts(app, event, TICKETS).await;
    // Once every hold (and offer) has lapsed, the tickets went down the queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while counts(app, event).await.1 > 0 && std::time::Instant::now() < deadline {
        check_counts(app, event, TICKETS).await;
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(app, event).await.1, 0, "every hold lapsed");
    check_standings(app, event, TICKETS, users).await;
}

/// booked + held <= total, and if anyone waits, booked + held = total.
async fn check_counts(app: &TestApp, event: &str, total: u64) -> (u64, u64, u64) {
    let (booked, held, available, waiting) = counts(app, event).await;
    assert!(booked + held <= total, "{booked} + {held} > {total}");
    assert_eq!(available, total - booked - held);
    if waiting > 0 {
        assert_eq!(
            booked + held,
            total,
            "a ticket sits free while {waiting} wait"
        );
    }
    (booked, held, waiting)
}

/// Once nothing moves any more: the counts hold, match the users'
/// standings, and the queue's positions are 1..n.
async fn check_standings(app: &TestApp, event: &str, total: u64, users: usize) {
    let (booked, held, waiting) = check_counts(app, event, total).await;
    let mut by_status = std::collections::HashMap::<String, u64>::new();
    let mut positions = Vec::new();
    for n in 0..users {
        let seen = app.get(&format!("/api/events/{event}/bookings/u{n}")).await;
        if seen.status == 404 {
            continue;
        }
        let status = seen.body["status"].as_str().unwrap().to_string();
        if status == "waiting" {
            positions.push(seen.body["position"].as_u64().unwrap());
        }
        *by_status.entry(status).or_default() += 1;
    }
    let count = |status: &str| by_status.get(status).copied().unwrap_or(0);
    assert_eq!((count("booked"), count("held")), (booked, held));
    positions.sort_unstable();
    assert_eq!(positions, (1..=waiting).collect::<Vec<_>>());
}

const LAPSED: &str = "booking_holds_lapsed_total";
const HELD: &str = "booking_held_tickets";
