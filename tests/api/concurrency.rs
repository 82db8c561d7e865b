use std::collections::HashSet;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[actix_web::test]
async fn simultaneous_bookings_sell_exactly_the_tickets_and_queue_the_rest() {
    let app = spawn_app();
    app.initialize(json!(1), 100).await;

    let answers = join_all((0..1000).map(|i| app.book(json!(1), json!(format!("user{i}"))))).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().find(|a| a.status != 200)
    );
    let booked: Vec<&Value> = answers
        .iter()
        .filter(|a| a.body["status"] == "booked")
        .map(|a| &a.body)
        .collect();
    let mut waiting: Vec<&Value> = answers
        .iter()
        .filter(|a| a.body["status"] == "waiting")
        .map(|a| &a.body)
        .collect();
    assert_eq!((booked.len(), waiting.len()), (100, 900));
    waiting.sort_by_key(|a| a["position"].as_u64().unwrap());
    let positions: Vec<u64> = waiting
        .iter()
        .map(|a| a["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=900).collect::<Vec<u64>>());
    assert_eq!(app.counts("1").await, (100, 900));

    // 50 holders cancel at once: exactly the first 50 of the queue get their tickets.
    let leaving: Vec<&Value> = booked[..50].iter().map(|a| &a["userId"]).collect();
    let cancels = join_all(
        leaving
            .iter()
            .map(|user| app.cancel(json!(1), (*user).clone())),
    )
    .await;
    assert!(
        cancels
            .iter()
            .all(|a| a.status == 200 && a.body["status"] == "reassigned"),
        "{cancels:?}"
    );
    let promoted: HashSet<&Value> = cancels.iter().map(|a| &a.body["userId"]).collect();
    let head: HashSet<&Value> = waiting[..50].iter().map(|a| &a["userId"]).collect();
    assert_eq!(promoted, head);
    let cancelled: HashSet<&Value> = cancels.iter().map(|a| &a.body["cancelledUserId"]).collect();
    assert_eq!(cancelled, leaving.into_iter().collect());

    // The rest of the queue moved up by 50, in the same order.
    let lookups = join_all(
        waiting[50..]
            .iter()
            .map(|a| app.user_status("1", a["userId"].as_str().unwrap())),
    )
    .await;
    let positions: Vec<u64> = lookups
        .iter()
        .map(|a| a.body["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=850).collect::<Vec<u64>>());
    assert_eq!(app.counts("1").await, (100, 850));
}

#[actix_web::test]
async fn events_are_booked_independently_at_the_same_time() {
    let app = spawn_app();
    for event in 1..=4 {
        app.initialize(json!(event), 10).await;
    }
    let answers =
        join_all((0..200).map(|i| app.book(json!(i % 4 + 1), json!(format!("u{i}"))))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    for event in 1..=4 {
        assert_eq!(app.counts(&event.to_string()).await, (10, 40));
    }
}
