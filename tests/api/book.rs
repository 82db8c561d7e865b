use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn books_every_ticket_then_queues_in_order() {
    let app = spawn_app();
    app.initialize(json!(1), 2).await;
    for user in ["user1", "user2"] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(
            (answer.status, answer.body),
            (200, json!({"status": "booked", "userId": user}))
        );
    }
    for (position, user) in [(1, "user3"), (2, "user4"), (3, "user5")] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                200,
                json!({"status": "waiting", "userId": user, "position": position})
            )
        );
    }
    let status = app.status("1").await.body;
    assert_eq!(
        status,
        json!({"eventId": 1, "totalTickets": 2, "bookedTickets": 2, "availableTickets": 0, "waitingListCount": 3})
    );
}

#[actix_web::test]
async fn a_user_holding_a_ticket_or_a_place_cannot_book_again() {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("holder")).await;
    app.book(json!(1), json!("waiter")).await;
    for (user, code) in [("holder", "already_booked"), ("waiter", "already_waiting")] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(answer.status, 409, "{user}");
        assert!(answer.body["error"].is_string());
        assert_eq!(answer.body["code"], code, "{user}");
    }
    // Nothing changed.
    assert_eq!(app.counts("1").await, (1, 1));
}

#[actix_web::test]
async fn booking_an_unknown_event_is_404() {
    let app = spawn_app();
    let answer = app.book(json!(404), json!("someone")).await;
    assert_eq!(
        (answer.status, answer.body),
        (
            404,
            json!({"error": "Event not found", "code": "event_not_found"})
        )
    );
}

#[actix_web::test]
async fn an_integer_user_id_is_the_same_user_as_its_text() {
    let app = spawn_app();
    app.initialize(json!(1), 5).await;
    let answer = app.book(json!(1), json!(42)).await;
    assert_eq!(answer.body, json!({"status": "booked", "userId": 42}));
    assert_eq!(app.book(json!(1), json!("42")).await.status, 409);
    assert_eq!(app.user_status("1", "42").await.body["status"], "booked");
    assert_eq!(app.book(json!(1), json!(0)).await.status, 200);
}
