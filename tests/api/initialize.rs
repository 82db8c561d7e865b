use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn initialize_creates_an_event_and_answers_201() {
    let app = spawn_app();
    let answer = app.initialize(json!(1), 100).await;
    assert_eq!(answer.status, 201);
    assert_eq!(
        answer.body,
        json!({"message": "Event initialized", "eventId": 1, "totalTickets": 100})
    );
    assert!(answer.content_type.starts_with("application/json"));

    let status = app.status("1").await;
    assert_eq!(status.status, 200);
    assert_eq!(
        status.body,
        json!({"eventId": 1, "totalTickets": 100, "bookedTickets": 0, "availableTickets": 100, "waitingListCount": 0})
    );
}

#[actix_web::test]
async fn an_existing_event_cannot_be_initialized_again() {
    let app = spawn_app();
    assert_eq!(app.initialize(json!(7), 10).await.status, 201);
    for again in [json!(7), json!("7")] {
        let answer = app.initialize(again, 99).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                409,
                json!({"error": "Event already initialized", "code": "event_exists"})
            )
        );
    }
    // The first initialization stands.
    assert_eq!(app.status("7").await.body["totalTickets"], 10);
}

#[actix_web::test]
async fn string_event_ids_are_kept_as_given() {
    let app = spawn_app();
    let answer = app.initialize(json!("Summer-Fest_2026.v1~a"), 3).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body["eventId"], "Summer-Fest_2026.v1~a");
    assert_eq!(
        app.status("Summer-Fest_2026.v1~a").await.body["totalTickets"],
        3
    );
    // The integer 42 and the string "42" are one event: echoed as sent, reported
    // by status (whose path carries no type) as the number.
    assert_eq!(app.initialize(json!("42"), 1).await.body["eventId"], "42");
    assert_eq!(app.book(json!(42), json!("u")).await.status, 200);
    assert_eq!(app.status("42").await.body["eventId"], 42);
}

#[actix_web::test]
async fn the_largest_event_is_accepted() {
    let app = spawn_app();
    let answer = app.initialize(json!(2), 10_000_000).await;
    assert_eq!(answer.status, 201);
    assert_eq!(app.status("2").await.body["availableTickets"], 10_000_000);
}
