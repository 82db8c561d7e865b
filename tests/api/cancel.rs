use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

async fn event_with(app: &TestApp, tickets: u64, users: &[&str]) {
    assert_eq!(app.initialize(json!(1), tickets).await.status, 201);
    for user in users {
        assert_eq!(app.book(json!(1), json!(user)).await.status, 200);
    }
}

#[actix_web::test]
async fn cancelling_with_nobody_waiting_puts_the_ticket_back_on_sale() {
    let app = spawn_app();
    event_with(&app, 2, &["a", "b"]).await;
    let answer = app.cancel(json!(1), json!("a")).await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"status": "cancelled", "userId": "a"}))
    );
    let status = app.status("1").await.body;
    assert_eq!(
        (
            status["bookedTickets"].clone(),
            status["availableTickets"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        app.book(json!(1), json!("c")).await.body["status"],
        "booked"
    );
}

#[actix_web::test]
async fn cancelling_a_ticket_hands_it_to_the_head_of_the_queue() {
    let app = spawn_app();
    event_with(&app, 1, &["user1", "user2", "user3"]).await;
    let answer = app.cancel(json!(1), json!("user1")).await;
    assert_eq!(
        (answer.status, answer.body),
        (
            200,
            json!({"status": "reassigned", "userId": "user2", "cancelledUserId": "user1"})
        )
    );
    assert_eq!(app.user_status("1", "user2").await.body["status"], "booked");
    assert_eq!(
        app.user_status("1", "user1").await.body["status"],
        "cancelled"
    );
    assert_eq!(app.user_status("1", "user3").await.body["position"], 1);
    assert_eq!(app.counts("1").await, (1, 1));
}

#[actix_web::test]
async fn a_waiting_user_leaves_the_queue_and_the_rest_move_up() {
    let app = spawn_app();
    event_with(&app, 1, &["holder", "w1", "w2", "w3"]).await;
    let answer = app.cancel(json!(1), json!("w2")).await;
    assert_eq!(
        (answer.status, answer.body),
        (200, json!({"status": "cancelled", "userId": "w2"}))
    );
    assert_eq!(app.user_status("1", "w1").await.body["position"], 1);
    assert_eq!(app.user_status("1", "w3").await.body["position"], 2);
    assert_eq!(app.status("1").await.body["waitingListCount"], 2);
    // The holder's ticket now goes to w1, then w3.
    assert_eq!(
        app.cancel(json!(1), json!("holder")).await.body["userId"],
        "w1"
    );
}

#[actix_web::test]
async fn cancelling_without_a_ticket_or_place_is_404() {
    let app = spawn_app();
    event_with(&app, 1, &["a"]).await;
    let answer = app.cancel(json!(1), json!("stranger")).await;
    assert_eq!(
        (answer.status, answer.body),
        (
            404,
            json!({"error": "Booking not found", "code": "booking_not_found"})
        )
    );
    assert_eq!(app.cancel(json!(1), json!("a")).await.status, 200);
    assert_eq!(
        app.cancel(json!(1), json!("a")).await.status,
        404,
        "a second cancel finds nothing"
    );
    let unknown = app.cancel(json!(2), json!("a")).await;
    assert_eq!(
        (unknown.status, unknown.body),
        (
            404,
            json!({"error": "Event not found", "code": "event_not_found"})
        )
    );
}

#[actix_web::test]
async fn a_cancelled_user_may_book_again_at_the_back_of_the_queue() {
    let app = spawn_app();
    event_with(&app, 1, &["holder", "w1", "w2"]).await;
    app.cancel(json!(1), json!("w1")).await;
    let answer = app.book(json!(1), json!("w1")).await;
    assert_eq!(
        answer.body,
        json!({"status": "waiting", "userId": "w1", "position": 2})
    );
}
