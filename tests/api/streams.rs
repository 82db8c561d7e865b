//! The status stream of an event (`GET /api/events/{eventId}/stream`):
//! committed statuses only, coalesced, resumable with `Last-Event-ID`,
//! bounded by `max_streams`, and correct across passivation and a stop. And
//! a user's standing stream (`.../bookings/{userId}/stream`): their place
//! moving up the queue, an offer arriving.

use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, EventReader, SentEvent, TestApp};

const WAIT: Duration = Duration::from_secs(10);

async fn create_event(app: &TestApp, event: &str, total_tickets: u64) {
    let body = json!({"eventId": event, "totalTickets": total_tickets});
    assert_eq!(app.post("/api/events", &body).await.status, 201);
}

/// Reads events until one matches `done`; every event read goes to `seen`.
async fn read_until(
    reader: &mut EventReader,
    seen: &mut Vec<SentEvent>,
    done: impl Fn(&SentEvent) -> bool,
) -> SentEvent {
    loop {
        let event = reader.next_event(WAIT).await.expect("an event in time");
        seen.push(event.clone());
        if done(&event) {
            return event;
        }
    }
}

#[actix_web::test]
async fn a_stream_sends_the_status_then_the_status_after_each_committed_change() {
    let app = spawn_app();
    create_event(&app, "gig", 2).await;
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    assert_eq!(stream.status, 200);
    assert!(stream.headers["content-type"].starts_with("text/event-stream"));
    let first = stream.next_event(WAIT).await.expect("the status at once");
    assert_eq!(first.event, "status");
    assert_eq!(first.data, app.get("/api/events/gig").await.body);
    let version: u64 = first.id.parse().expect("a version");
    app.book(json!("gig"), json!("a")).await;
    let next = stream.next_event(WAIT).await.expect("the booking");
    assert_eq!(next.data["bookedTickets"], 1);
    assert!(next.id.parse::<u64>().unwrap() > version, "{next:?}");
    assert_eq!(app.metrics().await["booking_open_streams"], 1.0);
    let unknown = app.get("/api/events/nope/stream").await;
    assert_eq!(
        (unknown.status, &unknown.body["code"]),
        (404, &json!("event_not_found"))
    );
}

#[actix_web::test]
async fn a_storm_of_ten_thousand_bookings_comes_coalesced_at_most_ten_a_second() {
    let app = spawn_app();
    create_event(&app, "drop", 1000).await;
    let mut stream = app.stream("/api/events/drop/stream", &[]).await;
    stream.next_event(WAIT).await.expect("the status at once");
    let started = Instant::now();
    let bookings = futures::stream::iter(0..10_000)
        .map(|n| app.book(json!("drop"), json!(format!("u{n}"))))
        .buffer_unordered(64);
    let answers: Vec<_> = bookings.collect().await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "every booking answered"
    );
    let mut seen = Vec::new();
    let last = read_until(&mut stream, &mut seen, |e| {
        e.data["waitingListCount"] == 9000
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(last.data, app.get("/api/events/drop").await.body);
    assert!(
        seen.len() as f64 <= 10.0 * elapsed + 1.0,
        "{} statuses in {elapsed:.2} s",
        seen.len()
    );
    // Newer each time.
    let ids: Vec<u64> = seen.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[actix_web::test]
async fn a_client_that_reconnects_with_last_event_id_hears_at_once_only_what_it_missed() {
    let app = spawn_app();
    create_event(&app, "gig", 5).await;
    app.book(json!("gig"), json!("a")).await;
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    let seen = stream.next_event(WAIT).await.expect("the status");
    drop(stream);
    // Up to date: nothing at once; the next change comes.
    let mut stream = app
        .stream("/api/events/gig/stream", &[("last-event-id", &seen.id)])
        .await;
    app.book(json!("gig"), json!("b")).await;
    let next = stream.next_event(WAIT).await.expect("the change");
    assert_eq!(next.data["bookedTickets"], 2, "not the status it had seen");
    // Behind: the current status at once.
    let mut stream = app
        .stream("/api/events/gig/stream", &[("last-event-id", &seen.id)])
        .await;
    let caught_up = stream.next_event(WAIT).await.expect("what it missed");
    assert_eq!(
        (&caught_up.id, caught_up.data["bookedTickets"].clone()),
        (&next.id, json!(2))
    );
    // Ahead (a database restored, the event created again): not what the
    // event is now, so the current status at once too.
    let ahead = (next.id.parse::<u64>().unwrap() + 1000).to_string();
    let mut stream = app
        .stream("/api/events/gig/stream", &[("last-event-id", &ahead)])
        .await;
    let current = stream.next_event(WAIT).await.expect("the current status");
    assert_eq!(current.id, next.id);
}

#[actix_web::test]
async fn open_streams_are_bounded_by_max_streams() {
    let app = spawn_app_with(&[("BOOKING_MAX_STREAMS", "2")]);
    create_event(&app, "gig", 5).await;
    let first = app.stream("/api/events/gig/stream", &[]).await;
    let _second = app.stream("/api/events/gig/stream", &[]).await;
    let refused = app.get("/api/events/gig/stream").await;
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (503, &json!("too_many_streams"))
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(app.metrics().await["booking_open_streams"], 2.0);
    // A client that goes away gives its place back, once the server writes
    // to it (a status, or the keep-alive every 15 s) and finds it gone.
    drop(first);
    app.book(json!("gig"), json!("a")).await;
    let deadline = Instant::now() + WAIT;
    while app.metrics().await["booking_open_streams"] > 1.0 && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let third = app.stream("/api/events/gig/stream", &[]).await;
    assert_eq!(third.status, 200);
}

#[actix_web::test]
async fn a_stream_goes_on_while_its_event_passivates_and_activates_again() {
    let app = spawn_app_with(&[("BOOKING_PASSIVATE_AFTER_SECS", "1")]);
    create_event(&app, "gig", 5).await;
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    stream.next_event(WAIT).await.expect("the status");
    app.book(json!("gig"), json!("a")).await;
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, |e| e.data["bookedTickets"] == 1).await;
    assert_eq!(
        app.metric_reaching("booking_event_passivations_total", 1.0)
            .await,
        1.0
    );
    app.book(json!("gig"), json!("b")).await;
    let after = read_until(&mut stream, &mut seen, |e| e.data["bookedTickets"] == 2).await;
    assert_eq!(after.data, app.get("/api/events/gig").await.body);
}

#[actix_web::test]
async fn a_stream_never_shows_a_change_that_was_not_stored() {
    let app = spawn_app_with(&[("BOOKING_MAX_PAGE_COUNT", "14")]);
    create_event(&app, "gig", 100_000).await;
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    stream.next_event(WAIT).await.expect("the status");
    let mut acknowledged = 0;
    for n in 0.. {
        let answer = app.book(json!("gig"), json!(format!("{n:0>200}"))).await;
        match answer.status {
            200 => acknowledged += 1,
            _ => {
                assert_eq!(answer.body["code"], "storage_unavailable", "{answer:?}");
                break;
            }
        }
    }
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, |e| {
        e.data["bookedTickets"] == acknowledged
    })
    .await;
    assert!(
        seen.iter()
            .all(|e| e.data["bookedTickets"].as_u64().unwrap() <= acknowledged),
        "a refused booking was streamed: {seen:?}"
    );
}

#[actix_web::test]
async fn streams_end_when_the_server_stops_and_the_stop_stays_graceful() {
    let mut app = spawn_app();
    create_event(&app, "gig", 5).await;
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    stream.next_event(WAIT).await.expect("the status");
    let status = app.stop_with("TERM");
    assert!(status.success(), "{status}");
    assert!(stream.next_event(WAIT).await.is_none());
    assert!(stream.ended, "the stream ended");
}

/// The user's standing from a standing stream's event.
fn standing(event: &SentEvent) -> (&str, Option<u64>) {
    let position = event.data["position"].as_u64();
    (event.data["status"].as_str().unwrap_or_default(), position)
}

/// A one-ticket event `gig` booked by `users` in order (the first holds the
/// ticket, the others wait), and the standing stream of the last of them,
/// read up to its first standing: waiting, second in the queue.
async fn third_in_line(app: &TestApp, users: [&str; 3]) -> (EventReader, SentEvent) {
    create_event(app, "gig", 1).await;
    for user in users {
        app.book(json!("gig"), json!(user)).await;
    }
    let path = format!("/api/events/gig/bookings/{}/stream", users[2]);
    let mut stream = app.stream(&path, &[]).await;
    assert_eq!(stream.status, 200);
    let first = stream.next_event(WAIT).await.expect("the standing at once");
    assert_eq!(standing(&first), ("waiting", Some(2)));
    (stream, first)
}

#[actix_web::test]
async fn a_user_stream_sends_the_standing_then_each_move_up_the_queue() {
    let app = spawn_app();
    let (mut stream, first) = third_in_line(&app, ["a", "b", "c"]).await;
    assert!(stream.headers["content-type"].starts_with("text/event-stream"));
    assert_eq!(first.event, "standing");
    assert_eq!(first.data, app.get("/api/events/gig/bookings/c").await.body);
    app.cancel(json!("gig"), json!("b")).await;
    let moved = stream.next_event(WAIT).await.expect("a move");
    assert_eq!(standing(&moved), ("waiting", Some(1)));
    // a's ticket goes to c, the head of the queue.
    app.cancel(json!("gig"), json!("a")).await;
    let booked = stream.next_event(WAIT).await.expect("the ticket");
    assert_eq!(standing(&booked), ("booked", None));
    assert_eq!(
        booked.data,
        app.get("/api/events/gig/bookings/c").await.body
    );
    assert_eq!(app.metrics().await["booking_open_streams"], 1.0);
    for (path, code) in [
        (
            "/api/events/gig/bookings/nobody/stream",
            "booking_not_found",
        ),
        ("/api/events/nope/bookings/c/stream", "event_not_found"),
    ] {
        let refused = app.get(path).await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (404, Some(code))
        );
    }
}

#[actix_web::test]
async fn a_user_stream_shows_an_offer_arriving() {
    let app = spawn_app();
    let body = json!({"eventId": "gig", "totalTickets": 1,
                      "waitingList": {"mode": "offer", "offerSecs": 60}});
    assert_eq!(app.post("/api/events", &body).await.status, 201);
    app.book(json!("gig"), json!("a")).await;
    app.book(json!("gig"), json!("b")).await;
    let mut stream = app.stream("/api/events/gig/bookings/b/stream", &[]).await;
    let first = stream.next_event(WAIT).await.expect("the standing");
    assert_eq!(standing(&first), ("waiting", Some(1)));
    app.cancel(json!("gig"), json!("a")).await;
    let offer = stream.next_event(WAIT).await.expect("the offer");
    assert_eq!(standing(&offer), ("held", None));
    assert_eq!(offer.data["offered"], true);
    assert!(offer.data["expiresAt"].is_string(), "{offer:?}");
    assert_eq!(offer.data, app.get("/api/events/gig/bookings/b").await.body);
}

#[actix_web::test]
async fn a_user_stream_comes_coalesced_while_the_queue_ahead_empties() {
    let app = spawn_app();
    create_event(&app, "drop", 1).await;
    let users: Vec<String> = (0..500).map(|n| format!("u{n:03}")).collect();
    for user in &users {
        app.book(json!("drop"), json!(user)).await;
    }
    let mut stream = app
        .stream("/api/events/drop/bookings/u499/stream", &[])
        .await;
    let first = stream.next_event(WAIT).await.expect("the standing");
    assert_eq!(standing(&first), ("waiting", Some(499)));
    let started = Instant::now();
    let cancels = users[1..499]
        .iter()
        .map(|user| app.cancel(json!("drop"), json!(user)));
    join_all(cancels).await;
    let mut seen = Vec::new();
    let last = read_until(&mut stream, &mut seen, |e| e.data["position"] == 1).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        last.data,
        app.get("/api/events/drop/bookings/u499").await.body
    );
    assert!(
        seen.len() as f64 <= 10.0 * elapsed + 1.0,
        "{} standings in {elapsed:.2} s",
        seen.len()
    );
    let positions: Vec<&Value> = seen.iter().map(|e| &e.data["position"]).collect();
    assert!(
        positions.windows(2).all(|w| w[0].as_u64() > w[1].as_u64()),
        "moving up only: {positions:?}"
    );
}

#[actix_web::test]
async fn a_user_stream_goes_on_while_its_event_passivates_and_activates_again() {
    let app = spawn_app_with(&[("BOOKING_PASSIVATE_AFTER_SECS", "1")]);
    let (mut stream, _) = third_in_line(&app, ["a", "b", "c"]).await;
    assert_eq!(
        app.metric_reaching("booking_event_passivations_total", 1.0)
            .await,
        1.0
    );
    app.cancel(json!("gig"), json!("b")).await;
    let moved = stream
        .next_event(WAIT)
        .await
        .expect("a move after activation");
    assert_eq!(standing(&moved), ("waiting", Some(1)));
}

#[actix_web::test]
async fn a_user_stream_never_shows_a_change_that_was_not_stored() {
    let app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "100")]);
    let (mut stream, _) = third_in_line(&app, ["a", "x", "w"]).await;
    // Another process holds the write lock: w's cancel is decided, and refused.
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let refused = app.cancel(json!("gig"), json!("w")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    intruder.execute_batch("ROLLBACK").unwrap();
    // Then a change that is stored moves w up: that is the next standing.
    // (503 while the event reloads after the failure.)
    let deadline = Instant::now() + WAIT;
    let cancelled = loop {
        let answer = app.cancel(json!("gig"), json!("x")).await;
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, |e| e.data["position"] == 1).await;
    assert!(
        seen.iter().all(|e| e.data["status"] == "waiting"),
        "a refused cancel was streamed: {seen:?}"
    );
}
