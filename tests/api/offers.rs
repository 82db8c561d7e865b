//! Waiting-list offers: in `offer` mode a freed ticket becomes a hold for
//! the head of the queue, which confirms it or lets it go to the next.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// An event of `tickets` in offer mode, offers lasting `offer_secs`; `holder`
/// books every ticket, then `waiting` join the queue in order.
async fn offering_event(app: &TestApp, offer_secs: u64, holders: &[&str], waiting: &[&str]) {
    let body = json!({"eventId": "gig", "totalTickets": holders.len(),
                      "waitingList": {"mode": "offer", "offerSecs": offer_secs}});
    assert_eq!(app.post("/api/events", &body).await.status, 201);
    for user in holders.iter().chain(waiting) {
        app.book(json!("gig"), json!(user)).await;
    }
}

async fn standing(app: &TestApp, user: &str) -> Value {
    app.get(&format!("/api/events/gig/bookings/{user}"))
        .await
        .body
}

/// Polls `user`'s standing until its status is `status`, for up to 20 s.
async fn standing_becomes(app: &TestApp, user: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = standing(app, user).await;
        if now["status"] == status || std::time::Instant::now() > deadline {
            return now;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_freed_ticket_is_offered_down_a_queue_of_five_as_each_offer_lapses() {
    let app = spawn_app();
    let queue = ["u1", "u2", "u3", "u4", "u5"];
    offering_event(&app, 1, &["a"], &queue).await;
    let cancelled = app.cancel(json!("gig"), json!("a")).await;
    assert_eq!(
        cancelled.body,
        json!({"status": "cancelled", "userId": "a", "offeredTo": "u1"})
    );
    let offer = standing(&app, "u1").await;
    assert_eq!(
        (&offer["status"], &offer["offered"]),
        (&json!("held"), &json!(true)),
        "{offer}"
    );
    assert_eq!(
        standing(&app, "u2").await["position"],
        1,
        "u1 left the queue"
    );
    let status = app.get("/api/events/gig").await.body;
    assert_eq!(
        (&status["heldTickets"], &status["waitingListCount"]),
        (&json!(1), &json!(4))
    );
    // Each lapses in turn; the next one in the queue gets the offer.
    for (user, next) in queue.iter().zip(queue.iter().skip(1)) {
        let lapsed = standing_becomes(&app, user, "expired").await;
        assert_eq!(lapsed["status"], "expired", "{user}: {lapsed}");
        let offered = standing(&app, next).await;
        assert!(
            offered["status"] == "held" || offered["status"] == "expired",
            "{next} was offered the ticket: {offered}"
        );
    }
    standing_becomes(&app, "u5", "expired").await;
    // Nobody left: the ticket is back on sale.
    let status = app.get("/api/events/gig").await.body;
    assert_eq!(
        (
            &status["heldTickets"],
            &status["availableTickets"],
            &status["waitingListCount"]
        ),
        (&json!(0), &json!(1), &json!(0))
    );
}

#[actix_web::test]
async fn an_offer_confirmed_at_the_last_moment_is_either_booked_or_lapsed_never_both() {
    let app = spawn_app();
    offering_event(&app, 1, &["a"], &["u1", "u2"]).await;
    app.cancel(json!("gig"), json!("a")).await;
    let offer = standing(&app, "u1").await;
    let expires_at: Timestamp = offer["expiresAt"].as_str().unwrap().parse().unwrap();
    // Until just before the offer lapses, then the confirm races the lapse.
    while Timestamp::now() + Duration::from_millis(5) < expires_at {
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    let confirm = app
        .request("POST", "/api/events/gig/holds/u1/confirm", &[], None)
        .await;
    let (u1, u2) = (standing(&app, "u1").await, standing(&app, "u2").await);
    match confirm.status {
        200 => {
            assert_eq!(confirm.body, json!({"status": "booked", "userId": "u1"}));
            assert_eq!(u1["status"], "booked");
            assert_eq!(u2["status"], "waiting", "the ticket was u1's");
        }
        404 => {
            assert_eq!(confirm.body["error"], "Hold not found");
            assert_eq!(u1["status"], "expired");
            assert_eq!(u2["status"], "held", "the lapse offered it to u2");
        }
        other => panic!("{other}: {:?}", confirm.body),
    }
    let status = app.get("/api/events/gig").await.body;
    assert_eq!(
        status["bookedTickets"].as_u64().unwrap() + status["heldTickets"].as_u64().unwrap(),
        1,
        "one ticket, one holder: {status}"
    );
}

#[actix_web::test]
async fn a_user_given_a_ticket_from_the_queue_who_cancels_is_not_queued_or_offered_again() {
    let app = spawn_app();
    offering_event(&app, 3600, &["a"], &["u1", "u2"]).await;
    app.cancel(json!("gig"), json!("a")).await;
    let confirmed = app
        .request("POST", "/api/events/gig/holds/u1/confirm", &[], None)
        .await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(
        app.cancel(json!("gig"), json!("u1")).await.body,
        json!({"status": "cancelled", "userId": "u1", "offeredTo": "u2"})
    );
    assert_eq!(standing(&app, "u1").await["status"], "cancelled");
    // u2 releases the offer: nobody waits, u1 is not offered it again.
    let released = app
        .request("DELETE", "/api/events/gig/holds/u2", &[], None)
        .await;
    assert_eq!(released.body, json!({"status": "released", "userId": "u2"}));
    assert_eq!(standing(&app, "u1").await["status"], "cancelled");
    assert_eq!(app.get("/api/events/gig").await.body["availableTickets"], 1);
    let queue = app.get("/api/events/gig/waiting-list").await.body;
    assert_eq!(queue["waiting"], json!([]));
}

#[actix_web::test]
async fn switching_to_offers_and_growing_the_event_offers_to_several_at_once() {
    let app = spawn_app();
    let body = json!({"eventId": "gig", "totalTickets": 1});
    app.post("/api/events", &body).await;
    for user in ["a", "u1", "u2", "u3"] {
        app.book(json!("gig"), json!(user)).await;
    }
    let changed = app
        .request(
            "PATCH",
            "/api/events/gig",
            &[],
            Some(&json!({"waitingList": {"mode": "offer", "offerSecs": 600}, "totalTickets": 3})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(
        (
            &changed.body["waitingList"],
            &changed.body["heldTickets"],
            &changed.body["waitingListCount"]
        ),
        (
            &json!({"mode": "offer", "offerSecs": 600}),
            &json!(2),
            &json!(1)
        )
    );
    for user in ["u1", "u2"] {
        assert_eq!(standing(&app, user).await["offered"], true, "{user}");
    }
    assert_eq!(standing(&app, "u3").await["position"], 1);
}
