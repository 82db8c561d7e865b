//! An event's settings: set at creation, changed with `PATCH` (admin):
//! capacity (more goes to the queue at once, less than taken is refused),
//! sales open or closed, the waiting list's mode, the holds' duration.

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

async fn create_event(app: &TestApp, body: Value) -> Answer {
    app.post("/api/events", &body).await
}

async fn patch(app: &TestApp, event: &str, body: Value) -> Answer {
    let path = format!("/api/events/{event}");
    app.request("PATCH", &path, &[], Some(&body)).await
}

async fn event(app: &TestApp, event: &str) -> Value {
    app.get(&format!("/api/events/{event}")).await.body
}

async fn standing(app: &TestApp, event: &str, user: &str) -> Value {
    app.get(&format!("/api/events/{event}/bookings/{user}"))
        .await
        .body
}

#[actix_web::test]
async fn an_event_is_created_with_its_settings_and_its_status_shows_them() {
    let app = spawn_app();
    let created = create_event(
        &app,
        json!({"eventId": "gig", "totalTickets": 5, "salesOpen": false,
               "waitingList": {"mode": "offer", "offerSecs": 60}, "holdSecs": 30}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        event(&app, "gig").await,
        json!({"eventId": "gig", "totalTickets": 5, "bookedTickets": 0, "heldTickets": 0,
               "availableTickets": 5, "waitingListCount": 0, "salesOpen": false,
               "waitingList": {"mode": "offer", "offerSecs": 60}, "holdSecs": 30})
    );
    // The old route shows them too, for an event that uses them.
    assert_eq!(app.status("gig").await.body["salesOpen"], false);
    // And the listing, read from the event's row.
    let listed = app.get("/api/events").await.body;
    assert_eq!(listed["events"][0], event(&app, "gig").await);
    for (body, says) in [
        (
            json!({"waitingList": {"mode": "lottery"}}),
            "waitingList.mode must be \"assign\" or \"offer\"",
        ),
        (
            json!({"waitingList": {"mode": "offer"}}),
            "waitingList.offerSecs is required in offer mode",
        ),
        (
            json!({"waitingList": {"mode": "offer", "offerSecs": 0}}),
            "waitingList.offerSecs must not be zero",
        ),
        (json!({"waitingList": "offer"}), "waitingList must be an object: {\"mode\": \"assign\"} or {\"mode\": \"offer\", \"offerSecs\": ...}"),
        (json!({"salesOpen": "no"}), "salesOpen must be true or false"),
        (json!({"holdSecs": 86_401}), "holdSecs is too large: at most 86400, not 86401"),
    ] {
        let mut body = body;
        body["eventId"] = json!("bad");
        body["totalTickets"] = json!(1);
        let refused = create_event(&app, body.clone()).await;
        assert_eq!(
            (refused.status, &refused.body["details"]),
            (400, &json!(says)),
            "{body}"
        );
    }
    assert_eq!(
        app.get("/api/events/bad").await.status,
        404,
        "nothing created"
    );
}

#[actix_web::test]
async fn more_capacity_goes_to_the_head_of_the_queue_and_less_than_taken_is_refused() {
    let mut app = spawn_app();
    create_event(&app, json!({"eventId": "gig", "totalTickets": 1})).await;
    for user in ["a", "b", "c", "d"] {
        app.book(json!("gig"), json!(user)).await;
    }
    let grown = patch(&app, "gig", json!({"totalTickets": 3})).await;
    assert_eq!(grown.status, 200, "{:?}", grown.body);
    assert_eq!(
        (
            &grown.body["totalTickets"],
            &grown.body["bookedTickets"],
            &grown.body["waitingListCount"],
            &grown.body["availableTickets"]
        ),
        (&json!(3), &json!(3), &json!(1), &json!(0)),
        "b and c were booked in the same change"
    );
    assert_eq!(standing(&app, "gig", "b").await["status"], "booked");
    assert_eq!(standing(&app, "gig", "c").await["status"], "booked");
    assert_eq!(
        standing(&app, "gig", "d").await,
        json!({"eventId": "gig", "userId": "d", "status": "waiting", "position": 1})
    );
    let refused = patch(&app, "gig", json!({"totalTickets": 2, "salesOpen": false})).await;
    assert_eq!(
        (
            refused.status,
            &refused.body["error"],
            &refused.body["code"]
        ),
        (
            409,
            &json!("Capacity below tickets taken"),
            &json!("capacity_below_tickets_taken")
        )
    );
    let unchanged = event(&app, "gig").await;
    assert_eq!(
        (&unchanged["totalTickets"], &unchanged["salesOpen"]),
        (&json!(3), &json!(true)),
        "nothing changed, the other field neither"
    );
    // Stored with the promotions: a restart reads the same.
    app.send_signal("KILL");
    app.wait_exit();
    app.start();
    assert_eq!(event(&app, "gig").await, unchanged);
    // Beyond the queue, the rest goes on sale.
    let room = patch(&app, "gig", json!({"totalTickets": 10})).await;
    assert_eq!(
        (&room.body["bookedTickets"], &room.body["availableTickets"]),
        (&json!(4), &json!(6))
    );
}

#[actix_web::test]
async fn closed_sales_refuse_new_bookings_holds_and_places_but_not_confirms_or_cancels() {
    let app = spawn_app();
    create_event(&app, json!({"eventId": "gig", "totalTickets": 2})).await;
    app.post("/api/events/gig/holds", &json!({"userId": "h"}))
        .await;
    app.book(json!("gig"), json!("a")).await;
    app.book(json!("gig"), json!("w")).await; // waits
    let closed = patch(&app, "gig", json!({"salesOpen": false})).await;
    assert_eq!(
        (closed.status, &closed.body["salesOpen"]),
        (200, &json!(false))
    );
    let sales_closed = |answer: Answer| {
        assert_eq!(
            (answer.status, &answer.body["error"], &answer.body["code"]),
            (409, &json!("Sales closed"), &json!("sales_closed")),
            "{answer:?}"
        )
    };
    sales_closed(app.book(json!("gig"), json!("new")).await);
    sales_closed(
        app.post("/api/events/gig/bookings", &json!({"userId": "new"}))
            .await,
    );
    sales_closed(
        app.post("/api/events/gig/holds", &json!({"userId": "new"}))
            .await,
    );
    assert_eq!(
        app.user_status("gig", "new").await.status,
        404,
        "nothing stored"
    );
    // A live hold is confirmed, and a cancel still promotes the queue's head.
    let confirmed = app
        .request("POST", "/api/events/gig/holds/h/confirm", &[], None)
        .await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(
        app.cancel(json!("gig"), json!("a")).await.body,
        json!({"status": "reassigned", "userId": "w", "cancelledUserId": "a"})
    );
    let reopened = patch(&app, "gig", json!({"salesOpen": true})).await;
    assert_eq!(reopened.body["salesOpen"], true);
    assert_eq!(
        app.book(json!("gig"), json!("new")).await.body["status"],
        "waiting"
    );
}

#[actix_web::test]
async fn the_events_hold_duration_is_the_default_of_its_holds() {
    let app = spawn_app_with(&[("BOOKING_HOLD_SECS", "100")]);
    create_event(&app, json!({"eventId": "gig", "totalTickets": 5})).await;
    assert_eq!(event(&app, "gig").await["holdSecs"], 100, "the server's");
    let lasts = |answer: Answer| {
        let expires_at: Timestamp = answer.body["expiresAt"].as_str().unwrap().parse().unwrap();
        expires_at.duration_since(Timestamp::now()).as_secs_f64()
    };
    let by_server = lasts(
        app.post("/api/events/gig/holds", &json!({"userId": "a"}))
            .await,
    );
    assert!((95.0..=100.0).contains(&by_server), "{by_server}");
    assert_eq!(
        patch(&app, "gig", json!({"holdSecs": 40})).await.body["holdSecs"],
        40
    );
    let by_event = lasts(
        app.post("/api/events/gig/holds", &json!({"userId": "b"}))
            .await,
    );
    assert!((35.0..=40.0).contains(&by_event), "{by_event}");
    let by_request = lasts(
        app.post(
            "/api/events/gig/holds",
            &json!({"userId": "c", "holdSecs": 10}),
        )
        .await,
    );
    assert!((5.0..=10.0).contains(&by_request), "{by_request}");
}

#[actix_web::test]
async fn bad_or_unauthorized_changes_are_refused_and_change_nothing() {
    let app = spawn_app_with(&[
        ("BOOKING_ADMIN_KEYS", "admin-key"),
        ("BOOKING_CLIENT_KEYS", "client-key"),
    ]);
    let admin = [("authorization", "Bearer admin-key")];
    let client = [("authorization", "Bearer client-key")];
    let body = json!({"eventId": "gig", "totalTickets": 1});
    assert_eq!(
        app.request("POST", "/api/events", &admin, Some(&body))
            .await
            .status,
        201
    );
    let change = json!({"salesOpen": false});
    let forbidden = app
        .request("PATCH", "/api/events/gig", &client, Some(&change))
        .await;
    assert_eq!(
        (forbidden.status, &forbidden.body["code"]),
        (403, &json!("forbidden"))
    );
    let empty = app
        .request("PATCH", "/api/events/gig", &admin, Some(&json!({})))
        .await;
    assert_eq!(
        (empty.status, &empty.body["details"]),
        (
            400,
            &json!("give at least one of totalTickets, salesOpen, waitingList, holdSecs")
        )
    );
    let zero = app
        .request(
            "PATCH",
            "/api/events/gig",
            &admin,
            Some(&json!({"totalTickets": 0})),
        )
        .await;
    assert_eq!(
        (zero.status, &zero.body["details"]),
        (400, &json!("totalTickets must not be zero"))
    );
    let unknown = app
        .request("PATCH", "/api/events/nope", &admin, Some(&change))
        .await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("event_not_found"))
    );
    let shown = app.request("GET", "/api/events/gig", &client, None).await;
    assert_eq!(shown.body["salesOpen"], true, "nothing changed");
    // Idempotent: a retried change replays its answer.
    let keyed = [admin[0], ("idempotency-key", "close-1")];
    let first = app
        .request("PATCH", "/api/events/gig", &keyed, Some(&change))
        .await;
    let retry = app
        .request("PATCH", "/api/events/gig", &keyed, Some(&change))
        .await;
    assert_eq!((first.status, retry.status), (200, 200));
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}
