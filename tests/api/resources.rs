//! The resource API: the event in the path, beside the old routes, with the
//! same rules and one implementation per operation.

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

async fn create_event(app: &TestApp, event: Value, total_tickets: u64) -> Answer {
    let body = json!({"eventId": event, "totalTickets": total_tickets});
    app.post("/api/events", &body).await
}

async fn create_booking(app: &TestApp, event: &str, user: Value) -> Answer {
    let path = format!("/api/events/{event}/bookings");
    app.post(&path, &json!({ "userId": user })).await
}

async fn delete_booking(app: &TestApp, event: &str, user: &str, key: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = key.iter().map(|k| ("idempotency-key", *k)).collect();
    let path = format!("/api/events/{event}/bookings/{user}");
    app.request("DELETE", &path, &headers, None).await
}

#[actix_web::test]
async fn an_event_is_created_and_read_through_its_resource() {
    let app = spawn_app();
    let created = create_event(&app, json!(7), 2).await;
    assert_eq!(
        (created.status, &created.body),
        (
            201,
            &json!({"message": "Event initialized", "eventId": 7, "totalTickets": 2})
        )
    );
    assert_eq!(created.header("location"), Some("/api/events/7"));
    let again = create_event(&app, json!("7"), 2).await;
    assert_eq!(
        (again.status, &again.body["code"]),
        (409, &json!("event_exists"))
    );
    // The old route knows it too, and answers the same.
    assert_eq!(app.initialize(json!(7), 2).await.status, 409);
    let resource = app.get("/api/events/7").await;
    assert_eq!(resource.status, 200);
    assert_eq!(
        resource.body,
        json!({"eventId": 7, "totalTickets": 2, "bookedTickets": 0, "heldTickets": 0,
               "availableTickets": 2, "waitingListCount": 0, "salesOpen": true,
               "waitingList": {"mode": "assign"}, "holdSecs": 600})
    );
    // The old route answers the Node.js original's five fields for an
    // event that uses no holds or settings.
    assert_eq!(
        app.status("7").await.body,
        json!({"eventId": 7, "totalTickets": 2, "bookedTickets": 0,
               "availableTickets": 2, "waitingListCount": 0})
    );
    let unknown = app.get("/api/events/8").await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("event_not_found"))
    );
    let invalid = app.get("/api/events/a%20b").await;
    assert_eq!(
        (invalid.status, &invalid.body["code"]),
        (400, &json!("invalid_input"))
    );
}

#[actix_web::test]
async fn bookings_are_created_read_and_deleted_through_their_resources() {
    let app = spawn_app();
    create_event(&app, json!("gig"), 1).await;
    let booked = create_booking(&app, "gig", json!("jürgen x")).await;
    assert_eq!(
        (booked.status, &booked.body),
        (201, &json!({"status": "booked", "userId": "jürgen x"}))
    );
    assert_eq!(
        booked.header("location"),
        Some("/api/events/gig/bookings/j%C3%BCrgen%20x")
    );
    let waiting = create_booking(&app, "gig", json!(42)).await;
    assert_eq!(
        (waiting.status, &waiting.body),
        (
            201,
            &json!({"status": "waiting", "userId": 42, "position": 1})
        )
    );
    assert_eq!(
        waiting.header("location"),
        Some("/api/events/gig/bookings/42")
    );
    // The Location names the booking: its standing, as the old route answers it.
    let standing = app.get("/api/events/gig/bookings/j%C3%BCrgen%20x").await;
    assert_eq!(
        standing.body,
        json!({"eventId": "gig", "userId": "jürgen x", "status": "booked"})
    );
    assert_eq!(
        standing.body,
        app.user_status("gig", "j%C3%BCrgen%20x").await.body
    );
    for (user, code) in [
        (json!("jürgen x"), "already_booked"),
        (json!("42"), "already_waiting"),
    ] {
        let duplicate = create_booking(&app, "gig", user).await;
        assert_eq!(
            (duplicate.status, &duplicate.body["code"]),
            (409, &json!(code))
        );
        assert_eq!(duplicate.header("location"), None);
    }
    let unknown = create_booking(&app, "nowhere", json!("u")).await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("event_not_found"))
    );
    let no_user = app.post("/api/events/gig/bookings", &json!({})).await;
    assert_eq!(
        (no_user.status, &no_user.body["details"]),
        (400, &json!("userId is required"))
    );

    // Deleting the holder's booking hands the ticket to the head of the queue.
    let deleted = delete_booking(&app, "gig", "ju%CC%88rgen%20x", None).await;
    assert_eq!(
        (deleted.status, &deleted.body),
        (
            200,
            &json!({"status": "reassigned", "userId": "42", "cancelledUserId": "jürgen x"})
        )
    );
    let gone = delete_booking(&app, "gig", "nobody", None).await;
    assert_eq!(
        (gone.status, &gone.body["code"]),
        (404, &json!("booking_not_found"))
    );
    assert_eq!(app.counts("gig").await, (1, 0));
    assert_eq!(
        app.get("/api/events/gig/bookings/42").await.body["status"],
        "booked"
    );
    // The old routes see what the new ones did, and the other way round.
    assert_eq!(
        app.cancel(json!("gig"), json!(42)).await.body["status"],
        "cancelled"
    );
    assert_eq!(
        app.get("/api/events/gig/bookings/42").await.body["status"],
        "cancelled"
    );
}

#[actix_web::test]
async fn retried_resource_requests_replay_their_first_answer() {
    let app = spawn_app();
    create_event(&app, json!("gig"), 5).await;
    let key = [("idempotency-key", "book-1")];
    let path = "/api/events/gig/bookings";
    let body = json!({"userId": "u1"});
    let first = app.request("POST", path, &key, Some(&body)).await;
    assert_eq!(first.status, 201);
    let retry = app.request("POST", path, &key, Some(&body)).await;
    assert_eq!((retry.status, &retry.body), (201, &first.body));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.header("location"),
        Some("/api/events/gig/bookings/u1")
    );
    // The same key with another user is another request.
    let other = app
        .request("POST", path, &key, Some(&json!({"userId": "u2"})))
        .await;
    assert_eq!(
        (other.status, &other.body["code"]),
        (422, &json!("idempotency_key_reused"))
    );

    let deleted = delete_booking(&app, "gig", "u1", Some("delete-1")).await;
    assert_eq!(deleted.body["status"], "cancelled");
    // A retry, even spelled otherwise, replays: it does not find the booking gone.
    let retried = delete_booking(&app, "gig", "%75%31", Some("delete-1")).await;
    assert_eq!((retried.status, &retried.body), (200, &deleted.body));
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        delete_booking(&app, "gig", "u1", None).await.status,
        404,
        "without the key it runs again"
    );
}

#[actix_web::test]
async fn creating_an_event_takes_an_admin_key() {
    let (admin, client) = ("admin-0123456789", "client-0123456789");
    let app = spawn_app_with(&[
        ("BOOKING_ADMIN_KEYS", admin),
        ("BOOKING_CLIENT_KEYS", client),
    ]);
    let body = json!({"eventId": 1, "totalTickets": 1});
    let as_client = format!("Bearer {client}");
    let refused = app
        .request(
            "POST",
            "/api/events",
            &[("authorization", &as_client)],
            Some(&body),
        )
        .await;
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (403, &json!("forbidden"))
    );
    // Nor when the path is spelled with percent-escapes, which the router decodes.
    for path in ["/api/%65vents", "/api/%69nitialize"] {
        let sneaked = app
            .request("POST", path, &[("authorization", &as_client)], Some(&body))
            .await;
        assert_eq!(sneaked.status, 403, "{path}: {sneaked:?}");
    }
    let as_admin = format!("Bearer {admin}");
    let created = app
        .request(
            "POST",
            "/api/events",
            &[("authorization", &as_admin)],
            Some(&body),
        )
        .await;
    assert_eq!(created.status, 201);
    // Reading the list, and booking, are a client's.
    let listed = app
        .request("GET", "/api/events", &[("authorization", &as_client)], None)
        .await;
    assert_eq!(listed.body["events"][0]["eventId"], 1);
    let booked = app
        .request(
            "POST",
            "/api/events/1/bookings",
            &[("authorization", &as_client)],
            Some(&json!({"userId": "u"})),
        )
        .await;
    assert_eq!(booked.status, 201);
}

/// Every event of `GET /api/events`, page by page of `limit`, and how many
/// pages it took.
async fn list_all(app: &TestApp, limit: usize) -> (Vec<Value>, usize) {
    let (mut events, mut pages) = (Vec::new(), 0);
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => format!("/api/events?limit={limit}"),
            Some(cursor) => format!("/api/events?limit={limit}&after={cursor}"),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        let listed = page.body["events"].as_array().expect("events").clone();
        assert!(listed.len() <= limit);
        events.extend(listed);
        pages += 1;
        match page.body["next"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => return (events, pages),
        }
    }
}

#[actix_web::test]
async fn paging_through_every_event_sees_each_once_with_its_counts_active_or_not() {
    const EVENTS: usize = 1000;
    let app = spawn_app_with(&[("BOOKING_PASSIVATE_AFTER_SECS", "1")]);
    join_all((0..EVENTS).map(|n| create_event(&app, json!(format!("e{n:04}")), 3))).await;
    // Some events with bookings and a queue; all of them passivated afterwards.
    let mut expected: HashMap<String, (u64, u64)> =
        (0..EVENTS).map(|n| (format!("e{n:04}"), (0, 0))).collect();
    for n in (0..EVENTS).step_by(37) {
        let event = format!("e{n:04}");
        let users = n % 6;
        for user in 0..users {
            assert_eq!(create_booking(&app, &event, json!(user)).await.status, 201);
        }
        expected.insert(event, (users.min(3) as u64, users.saturating_sub(3) as u64));
    }
    let passivated = app
        .metric_reaching("booking_event_passivations_total", EVENTS as f64)
        .await;
    assert_eq!(passivated, EVENTS as f64);

    let (listed, pages) = list_all(&app, 7).await;
    assert_eq!(pages, EVENTS.div_ceil(7));
    // Created concurrently, so in no order known here (the next test checks the order).
    let ids: std::collections::HashSet<&str> = listed
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), EVENTS, "as many as there are");
    assert_eq!(ids.len(), EVENTS, "every event, each once");
    for event in &listed {
        let id = event["eventId"].as_str().unwrap();
        let (booked, waiting) = expected[id];
        assert_eq!(
            event,
            &json!({"eventId": id, "totalTickets": 3, "bookedTickets": booked, "heldTickets": 0,
                    "availableTickets": 3 - booked, "waitingListCount": waiting,
                    "salesOpen": true, "waitingList": {"mode": "assign"}, "holdSecs": 600}),
        );
    }
    assert_eq!(
        app.metrics().await.get("booking_active_events").copied(),
        Some(0.0),
        "listing read no event into memory"
    );
    let bad = app.get("/api/events?limit=0").await;
    assert_eq!(
        (bad.status, &bad.body["details"]),
        (
            400,
            &json!("limit must be a whole number from 1 to 1000, not \"0\"")
        )
    );
}

#[actix_web::test]
async fn events_are_listed_in_creation_order_those_created_between_pages_at_the_end() {
    let app = spawn_app();
    for n in [3, 0, 4, 1, 2] {
        create_event(&app, json!(format!("first{n}")), 1).await;
    }
    let page = app.get("/api/events?limit=3").await;
    let ids: Vec<&Value> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["eventId"])
        .collect();
    assert_eq!(ids, [&json!("first3"), &json!("first0"), &json!("first4")]);
    let cursor = page.body["next"].as_str().expect("more").to_string();
    create_event(&app, json!("late"), 1).await;
    let rest = app
        .get(&format!("/api/events?limit=3&after={cursor}"))
        .await;
    let ids: Vec<&Value> = rest.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["eventId"])
        .collect();
    assert_eq!(ids, [&json!("first1"), &json!("first2"), &json!("late")]);
    assert_eq!(rest.body["next"], Value::Null);
}

#[actix_web::test]
async fn the_waiting_list_pages_in_queue_order_while_it_moves() {
    let app = spawn_app();
    create_event(&app, json!("gig"), 1).await;
    for n in 0..26 {
        create_booking(&app, "gig", json!(format!("u{n:02}"))).await;
    }
    // u00 holds the ticket; u01..u25 wait.
    let first = app.get("/api/events/gig/waiting-list?limit=10").await;
    assert_eq!(first.status, 200);
    let entries = first.body["waiting"].as_array().unwrap().clone();
    let expected: Vec<Value> = (1..=10)
        .map(|n| json!({"userId": format!("u{n:02}"), "position": n}))
        .collect();
    assert_eq!(entries, expected);
    let cursor = first.body["next"].as_str().unwrap().to_string();
    // The queue moves between pages: the holder leaves (u01 gets the ticket),
    // and the last user of the page leaves too.
    assert_eq!(
        app.cancel(json!("gig"), json!("u00")).await.body["status"],
        "reassigned"
    );
    assert_eq!(app.cancel(json!("gig"), json!("u10")).await.status, 200);
    let second = app
        .get(&format!(
            "/api/events/gig/waiting-list?limit=10&after={cursor}"
        ))
        .await;
    let entries = second.body["waiting"].as_array().unwrap().clone();
    // Nobody skipped, nobody twice: u11 is next, now at position 9.
    let expected: Vec<Value> = (11..=20)
        .map(|n| json!({"userId": format!("u{n:02}"), "position": n - 2}))
        .collect();
    assert_eq!(entries, expected);
    let cursor = second.body["next"].as_str().unwrap().to_string();
    let last = app
        .get(&format!("/api/events/gig/waiting-list?after={cursor}"))
        .await;
    let users: Vec<&Value> = last.body["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["userId"])
        .collect();
    assert_eq!(
        users,
        ["u21", "u22", "u23", "u24", "u25"]
            .map(|u| json!(u))
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(last.body["next"], Value::Null);
    assert_eq!(
        app.get("/api/events/none/waiting-list").await.body["code"],
        "event_not_found"
    );
}

#[actix_web::test]
async fn keyed_creations_of_an_existing_event_amid_bookings_all_get_their_answer() {
    // A refused creation with a key stores its answer while bookings of
    // other events go on: nothing may wait on the map's locks meanwhile.
    let app = spawn_app();
    for n in 0..8 {
        create_event(&app, json!(format!("e{n}")), 1_000).await;
    }
    let creations = (0..40).map(|n| {
        let key = format!("create-{n}");
        let app = &app;
        async move {
            let body = json!({"eventId": "e0", "totalTickets": 5});
            let answer = app
                .request(
                    "POST",
                    "/api/events",
                    &[("idempotency-key", &key)],
                    Some(&body),
                )
                .await;
            assert_eq!(answer.body["code"], "event_exists", "{answer:?}");
        }
    });
    let bookings = (0..400).map(|n| {
        let app = &app;
        async move {
            let booked = create_booking(app, &format!("e{}", n % 8), json!(n)).await;
            assert_eq!(booked.status, 201, "{booked:?}");
        }
    });
    futures::join!(join_all(creations), join_all(bookings));
    assert_eq!(app.counts("e1").await, (50, 0));
}
