use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn a_user_status_is_booked_waiting_or_cancelled() {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("user1")).await;
    app.book(json!(1), json!("user2")).await;
    app.book(json!(1), json!("user3")).await;
    app.cancel(json!(1), json!("user2")).await;

    let booked = app.user_status("1", "user1").await;
    assert_eq!(
        (booked.status, booked.body),
        (
            200,
            json!({"eventId": 1, "userId": "user1", "status": "booked"})
        )
    );
    let waiting = app.user_status("1", "user3").await;
    assert_eq!(
        waiting.body,
        json!({"eventId": 1, "userId": "user3", "status": "waiting", "position": 1})
    );
    let cancelled = app.user_status("1", "user2").await;
    assert_eq!(
        cancelled.body,
        json!({"eventId": 1, "userId": "user2", "status": "cancelled"})
    );
}

#[actix_web::test]
async fn unknown_users_and_events_are_404() {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    let user = app.user_status("1", "nobody").await;
    assert_eq!(
        (user.status, user.body),
        (
            404,
            json!({"error": "Booking not found", "code": "booking_not_found"})
        )
    );
    for path in ["/api/status/2", "/api/status/2/nobody"] {
        let answer = app.get(path).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                404,
                json!({"error": "Event not found", "code": "event_not_found"})
            ),
            "{path}"
        );
    }
}

#[actix_web::test]
async fn the_user_path_segment_is_percent_decoded() {
    let app = spawn_app();
    app.initialize(json!("e"), 10).await;
    for (user, encoded) in [
        ("a b", "a%20b"),
        ("zoë", "zo%C3%AB"),
        ("x/y", "x%2Fy"),
        ("50%", "50%25"),
        ("?q#", "%3Fq%23"),
    ] {
        assert_eq!(
            app.book(json!("e"), json!(user)).await.status,
            200,
            "{user}"
        );
        let answer = app.user_status("e", encoded).await;
        assert_eq!(
            (answer.status, answer.body["userId"].clone()),
            (200, json!(user)),
            "{encoded}"
        );
    }
}

#[actix_web::test]
async fn a_malformed_event_id_in_the_path_is_400() {
    let app = spawn_app();
    let long = "x".repeat(65);
    for path in [
        "/api/status/a%20b".to_string(),
        format!("/api/status/{long}"),
        format!("/api/status/{long}/u"),
    ] {
        let answer = app.get(&path).await;
        assert_eq!(
            (answer.status, &answer.body["error"], &answer.body["code"]),
            (400, &json!("Invalid input"), &json!("invalid_input")),
            "{path}"
        );
        assert!(
            answer.body["details"].as_str().unwrap().contains("eventId"),
            "{path}"
        );
    }
}
