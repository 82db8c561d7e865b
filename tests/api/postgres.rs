//! The PostgreSQL backend (`storage.backend = "postgres"`): the booking
//! contract, recovery and idempotent replays from what PostgreSQL holds,
//! concurrent starts on one database, and connections that break.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, unstarted_app_with, TestApp};
use crate::postgres_server::{postgres_database, PostgresDatabase};

/// A server on its own new PostgreSQL database, or `None` (skipped).
fn spawn_on_postgres(extra: &[(&str, &str)]) -> Option<(TestApp, PostgresDatabase)> {
    let database = postgres_database()?;
    let app = spawn_on(&database, extra);
    Some((app, database))
}

fn spawn_on(database: &PostgresDatabase, extra: &[(&str, &str)]) -> TestApp {
    let env = database.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    spawn_app_with(&env)
}

async fn book_with_key(
    app: &TestApp,
    event: &str,
    user: &str,
    key: &str,
) -> crate::helpers::Answer {
    app.request(
        "POST",
        "/api/book",
        &[("Idempotency-Key", key)],
        Some(&json!({"eventId": event, "userId": user})),
    )
    .await
}

/// Returns once every event's row holds what its log's rows move (schema
/// version 7: the writer folds them in about once a second); fails after 10 s.
async fn until_folded(database: &PostgresDatabase) {
    let unfolded = "SELECT count(*) FROM order_log o JOIN events e ON e.id = o.event_id
        WHERE o.seq > e.counted_through";
    for _ in 0..200 {
        if database.sql(unfolded) == "0" {
            return;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("rows of the log still not folded into their events' counts after 10 s");
}

#[actix_web::test]
async fn the_booking_contract_holds_on_postgres_and_survives_a_restart() {
    let Some((mut app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.until_ready().await;
    assert_eq!(app.initialize(json!("gig"), 2).await.status, 201);
    assert_eq!(app.initialize(json!("gig"), 2).await.status, 409);
    assert_eq!(
        app.book(json!("gig"), json!("a")).await.body["status"],
        "booked"
    );
    assert_eq!(
        app.book(json!("gig"), json!("b")).await.body["status"],
        "booked"
    );
    let waiting = app.book(json!("gig"), json!("c")).await;
    assert_eq!(
        waiting.body,
        json!({"status": "waiting", "userId": "c", "position": 1})
    );
    assert_eq!(app.book(json!("gig"), json!("d")).await.body["position"], 2);
    assert_eq!(app.book(json!("gig"), json!("a")).await.status, 409);
    let keyed = book_with_key(&app, "gig", "e", "key-e").await;
    assert_eq!(keyed.body["position"], 3);
    // The resource routes, on the same storage.
    let created = app
        .post(
            "/api/events",
            &json!({"eventId": "show", "totalTickets": 1}),
        )
        .await;
    assert_eq!(created.status, 201);
    let booked = app
        .post("/api/events/show/bookings", &json!({"userId": "x"}))
        .await;
    assert_eq!(booked.status, 201);
    let cancelled = app
        .request("DELETE", "/api/events/gig/bookings/a", &[], None)
        .await;
    assert_eq!(
        cancelled.body,
        json!({"status": "reassigned", "userId": "c", "cancelledUserId": "a"}),
        "{cancelled:?}"
    );
    assert_eq!(app.counts("gig").await, (2, 2));

    // What PostgreSQL holds: the log, the counts beside each event (folded
    // into its row within about a second), the key.
    until_folded(&database).await;
    assert_eq!(
        database.sql("SELECT id, booked, waiting FROM events ORDER BY created"),
        "gig|2|2\nshow|1|0"
    );
    assert_eq!(database.sql("SELECT count(*) FROM idempotency"), "1");

    // A restart reads everything back from PostgreSQL.
    app.restart();
    app.until_ready().await;
    assert_eq!(app.counts("gig").await, (2, 2));
    let standing = |user: &'static str| {
        let app = &app;
        async move { app.user_status("gig", user).await.body }
    };
    assert_eq!(standing("a").await["status"], "cancelled");
    assert_eq!(standing("c").await["status"], "booked");
    assert_eq!(standing("d").await["position"], 1);
    assert_eq!(standing("e").await["position"], 2);
    // The keyed booking replays its first answer, from PostgreSQL.
    let replayed = book_with_key(&app, "gig", "e", "key-e").await;
    assert_eq!(replayed.body, keyed.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    let listed = app.get("/api/events?limit=1").await;
    assert_eq!(listed.body["events"][0]["eventId"], "gig");
    let next = listed.body["next"]
        .as_str()
        .expect("a second page")
        .to_string();
    let rest = app.get(&format!("/api/events?after={next}")).await;
    assert_eq!(rest.body["events"][0]["eventId"], "show");
    assert_eq!(rest.body["events"][0]["bookedTickets"], 1);
}

/// Schema version 7: an order's counts travel in its row of the log until
/// the writer folds them into its event's row. Whatever was folded when an
/// instance died, the listing, the gauges, a stream's version and the event
/// read back count every committed change once.
#[actix_web::test]
async fn counts_not_folded_yet_are_read_from_the_log_after_a_crash() {
    let Some((mut app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.until_ready().await;
    assert_eq!(app.initialize(json!("gig"), 3).await.status, 201);
    for user in ["a", "b", "c", "d", "e"] {
        assert!(app.book(json!("gig"), json!(user)).await.status < 300);
    }
    assert_eq!(app.cancel(json!("gig"), json!("b")).await.status, 200);
    // Six changes: 3 booked and 1 waiting once d took b's ticket.
    until_folded(&database).await;
    assert_eq!(
        database.sql("SELECT booked, waiting, version FROM events"),
        "3|1|6"
    );
    app.send_signal("KILL");
    app.wait_exit();
    // As if the instance died between committing the last four changes and
    // folding them: take them out of the event's row again.
    database.sql(
        "UPDATE events e SET booked = e.booked - m.b, waiting = e.waiting - m.w,
             version = e.version - m.v, counted_through = m.first - 1
         FROM (SELECT sum(moved_booked) b, sum(moved_waiting) w, sum(moved_version) v,
                   min(seq) first
               FROM (SELECT * FROM order_log ORDER BY seq DESC LIMIT 5) last) m",
    );
    assert_eq!(
        database.sql("SELECT booked, waiting, version FROM events"),
        "2|0|2",
        "the last four changes (c booked, d and e waiting, b's ticket to d) unfolded"
    );

    app.start();
    app.until_ready().await;
    let listed = app.get("/api/events").await;
    assert_eq!(listed.body["events"][0]["bookedTickets"], 3, "{listed:?}");
    assert_eq!(
        listed.body["events"][0]["waitingListCount"], 1,
        "{listed:?}"
    );
    let gauges = app.metrics().await;
    assert_eq!(gauges["booking_booked_tickets"], 3.0);
    assert_eq!(gauges["booking_waiting_users"], 1.0);
    assert_eq!(
        gauges["booking_active_events"], 0.0,
        "listed without reading it"
    );
    let mut stream = app.stream("/api/events/gig/stream", &[]).await;
    let first = stream
        .next_event(std::time::Duration::from_secs(10))
        .await
        .expect("the event's status");
    assert_eq!(first.id, "6", "every change counted once in the version");
    drop(stream);
    assert_eq!(app.counts("gig").await, (3, 1));
    assert_eq!(app.user_status("gig", "e").await.body["position"], 1);

    // The next commit of the event folds what was left with it.
    assert_eq!(app.book(json!("gig"), json!("f")).await.body["position"], 2);
    until_folded(&database).await;
    assert_eq!(
        database.sql("SELECT booked, waiting, version FROM events"),
        "3|2|7"
    );
}

#[actix_web::test]
async fn simultaneous_bookings_never_oversell_and_all_are_stored() {
    let Some((app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.initialize(json!("drop"), 50).await;
    let answers = join_all((0..300).map(|i| app.book(json!("drop"), json!(format!("u{i}"))))).await;
    let booked = answers
        .iter()
        .filter(|a| a.body["status"] == "booked")
        .count();
    let mut positions: Vec<u64> = answers
        .iter()
        .filter_map(|a| a.body["position"].as_u64())
        .collect();
    positions.sort_unstable();
    assert_eq!(booked, 50);
    assert_eq!(positions, (1..=250).collect::<Vec<_>>());
    assert_eq!(
        database.sql("SELECT status, count(*) FROM order_log GROUP BY status ORDER BY status"),
        "booked|50\nwaiting|250"
    );
}

#[actix_web::test]
async fn instances_starting_at_once_on_one_database_create_its_schema_once() {
    let Some(database) = postgres_database() else {
        return;
    };
    let env = database.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut apps: Vec<TestApp> = (0..3).map(|_| unstarted_app_with(&env)).collect();
    TestApp::start_together(&mut apps);
    for app in &apps {
        app.until_ready().await;
    }
    assert_eq!(database.sql("SELECT version FROM booking_schema"), "9");
    // Creations of all instances take one order.
    for (i, app) in apps.iter().enumerate() {
        assert_eq!(app.initialize(json!(format!("e{i}")), 1).await.status, 201);
    }
    assert_eq!(
        database.sql("SELECT string_agg(created::text, ',' ORDER BY created) FROM events"),
        "1,2,3"
    );
}

#[actix_web::test]
async fn a_start_waits_for_a_migration_that_outlasts_the_lock_timeout() {
    let Some(database) = postgres_database() else {
        return;
    };
    // Another instance's long migration (version 8 rebuilds indexes), as its
    // lock shows: held for longer than the sessions' lock timeout of 5 s.
    let migrating = {
        let database = database.clone();
        std::thread::spawn(move || {
            database.sql("SELECT pg_advisory_lock(x'6576626f6f6b2d6d'::bigint); SELECT pg_sleep(7)")
        })
    };
    let held = "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database
        WHERE locktype = 'advisory' AND granted AND d.datname = current_database()";
    for _ in 0..1000 {
        if database.sql(held) == "1" {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        database.sql(held),
        "1",
        "the migration's lock was never taken"
    );

    let env = database.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = unstarted_app_with(&env);
    app.start();
    app.until_ready().await;
    migrating.join().expect("the other session ended");
    assert_eq!(database.sql("SELECT version FROM booking_schema"), "9");
    assert_eq!(app.initialize(json!("gig"), 1).await.status, 201);
}

#[actix_web::test]
async fn a_database_of_schema_version_1_is_migrated_and_keeps_its_orders() {
    let Some((mut app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.until_ready().await;
    app.initialize(json!("gig"), 1).await;
    app.book(json!("gig"), json!("a")).await;
    app.book(json!("gig"), json!("b")).await;
    // Version 1 kept the counts in the event's row only.
    until_folded(&database).await;
    assert!(app.stop_with("TERM").success());
    // Back to version 1, as an older release left it.
    database.sql(
        "ALTER TABLE events ALTER COLUMN id TYPE text COLLATE \"default\";
         ALTER TABLE order_log ALTER COLUMN event_id TYPE text COLLATE \"default\",
             ALTER COLUMN user_id TYPE text COLLATE \"default\";
         ALTER TABLE idempotency ALTER COLUMN scope TYPE text COLLATE \"default\",
             ALTER COLUMN key TYPE text COLLATE \"default\";
         ALTER TABLE order_log DROP COLUMN moved_booked, DROP COLUMN moved_waiting,
             DROP COLUMN moved_version;
         ALTER TABLE events DROP COLUMN counted_through;
         ALTER TABLE events DROP COLUMN version, DROP COLUMN sales_open, DROP COLUMN waiting_list,
             DROP COLUMN offer_secs, DROP COLUMN hold_secs;
         DROP INDEX events_holding;
         ALTER TABLE events DROP COLUMN held;
         ALTER TABLE order_log DROP COLUMN expires_at;
         ALTER TABLE order_log DROP CONSTRAINT order_log_status_check;
         ALTER TABLE order_log ADD CONSTRAINT order_log_status_check
             CHECK (status IN ('booked', 'waiting', 'cancelled'));
         DROP TABLE owners;
         DROP SEQUENCE writers;
         ALTER TABLE order_log DROP COLUMN claim;
         DROP SEQUENCE ownerships;
         ALTER TABLE order_log ADD CONSTRAINT order_log_event_id_fkey
             FOREIGN KEY (event_id) REFERENCES events (id);
         UPDATE booking_schema SET version = 1",
    );

    app.start();
    app.until_ready().await;
    assert_eq!(database.sql("SELECT version FROM booking_schema"), "9");
    // Version 6 drops the log's foreign key (see schema.rs).
    assert_eq!(
        database.sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"),
        "0"
    );
    // Version 8 compares the ids byte by byte, in the indexes too.
    assert_eq!(
        database.sql(
            "SELECT string_agg(name, ',' ORDER BY name COLLATE \"C\")
             FROM (SELECT attrelid::regclass || '.' || attname AS name, attrelid, attcollation, attnum
                 FROM pg_attribute) AS columns
             WHERE attcollation = 'pg_catalog.\"C\"'::regcollation AND attnum > 0
                 AND attrelid::regclass::text IN ('events', 'order_log', 'idempotency',
                     'events_pkey', 'order_log_by_event', 'idempotency_by_key')"
        ),
        "events.id,events_pkey.id,idempotency.key,idempotency.scope,idempotency_by_key.key,\
         idempotency_by_key.scope,order_log.event_id,order_log.user_id,order_log_by_event.event_id"
    );
    assert_eq!(app.counts("gig").await, (1, 1));
    assert_eq!(
        app.cancel(json!("gig"), json!("a")).await.body["status"],
        "reassigned"
    );
    // Rows of version 1 have no claim; rows since, their owner's.
    assert_eq!(
        database.sql("SELECT user_id, status, claim IS NOT NULL FROM order_log ORDER BY seq"),
        "a|booked|f\nb|waiting|f\na|cancelled|t\nb|booked|t"
    );
    // Versions 3 to 5: holds, settings and versions, which the old schema lacked.
    app.initialize(json!("fair"), 1).await;
    let held = app
        .post("/api/events/fair/holds", &json!({"userId": "h"}))
        .await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    assert_eq!(
        database
            .sql("SELECT status, expires_at IS NOT NULL FROM order_log WHERE event_id = 'fair'"),
        "held|t"
    );
}

#[actix_web::test]
async fn an_instance_of_schema_version_8_commits_nothing_once_version_9_is_in() {
    let Some((mut app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.until_ready().await;
    app.initialize(json!("gig"), 5).await;
    assert!(app.stop_with("TERM").success());
    // Back to version 8, with the writer of an instance of version 8 at
    // work (it would own its events by locks that version 9 does not look
    // at): it has prepared the log's insert, with the column `ownership`.
    database.sql(
        "DROP TABLE owners;
         DROP SEQUENCE writers;
         ALTER TABLE order_log RENAME COLUMN claim TO ownership;
         UPDATE booking_schema SET version = 8",
    );
    let (old, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .expect("connected");
    actix_web::rt::spawn(connection);
    let commit = old
        .prepare(
            "INSERT INTO order_log (event_id, user_id, status, ownership)
             VALUES ('gig', $1, 'booked', 1)",
        )
        .await
        .expect("prepared at version 8");
    old.execute(&commit, &[&"before"])
        .await
        .expect("committed at version 8");

    app.start();
    app.until_ready().await;
    assert_eq!(database.sql("SELECT version FROM booking_schema"), "9");
    let after = old.execute(&commit, &[&"after"]).await;
    assert_eq!(
        after.expect_err("version 8 committed at version 9").code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
    );
    assert_eq!(
        database.sql("SELECT string_agg(user_id, ',') FROM order_log WHERE event_id = 'gig'"),
        "before"
    );
}

#[actix_web::test]
async fn a_terminated_session_acknowledges_nothing_unstored_and_the_server_reconnects() {
    let Some((app, database)) = spawn_on_postgres(&[]) else {
        return;
    };
    app.initialize(json!("gig"), 1000).await;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for round in 0..4 {
        // A booking that goes through first: the server has its sessions again.
        let warm = format!("warm{round}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.book(json!("gig"), json!(warm)).await.status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "no booking went through"
            );
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        acknowledged.push(warm);
        // The sessions are ended while bookings are on their way to them.
        let terminate = {
            let database = database.clone();
            actix_web::rt::task::spawn_blocking(move || {
                database.sql(&format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = '{}' AND application_name = 'event-booking'",
                    database.name
                ))
            })
        };
        let bookings =
            join_all((0..100).map(|i| app.book(json!("gig"), json!(format!("r{round}-{i}")))));
        let (answers, terminated) = futures::join!(bookings, terminate);
        assert_ne!(terminated.unwrap(), "0", "the server's sessions were found");
        for (i, answer) in answers.iter().enumerate() {
            match answer.status {
                200 => acknowledged.push(format!("r{round}-{i}")),
                503 => {
                    refused += 1;
                    assert_eq!(answer.body["code"], "storage_unavailable", "{answer:?}");
                }
                other => panic!("{other}: {answer:?}"),
            }
        }
    }
    // Writes resume without a restart (a retry or two: the first request
    // after a lost session may find the event reloading), and every
    // acknowledged one is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let after = app.book(json!("gig"), json!("after")).await;
        if after.status != 503 || std::time::Instant::now() > deadline {
            break after;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(after.status, 200, "{after:?}");
    acknowledged.push("after".into());
    let stored: Vec<String> = database
        .sql("SELECT user_id FROM order_log")
        .lines()
        .map(String::from)
        .collect();
    for user in &acknowledged {
        assert!(stored.contains(user), "{user} acknowledged, not stored");
    }
    let status: Value = app.status("gig").await.body;
    assert_eq!(status["bookedTickets"], stored.len());
    eprintln!("{refused} of 400 refused while their session ended");
}

#[test]
fn the_postgres_backend_without_a_url_is_refused_at_start() {
    let mut app = unstarted_app_with(&[("BOOKING_STORAGE__BACKEND", "postgres")]);
    let exited = app.start_to_exit();
    assert!(!exited.success());
    assert!(
        app.log().contains("storage.postgres_url must be set"),
        "{}",
        app.log()
    );
}

#[actix_web::test]
async fn one_instance_decides_for_an_event_at_a_time_and_hands_it_over_when_asked() {
    let Some(database) = postgres_database() else {
        return;
    };
    // Neither lets its events go when idle: only a hand-off moves one.
    let a = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    let mut b = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    assert_eq!(a.initialize(json!("gig"), 4).await.status, 201);
    assert_eq!(a.book(json!("gig"), json!("u1")).await.status, 200);

    // B asks A for the event, and A hands it over: B decides from what A committed.
    let booked = b.book(json!("gig"), json!("u2")).await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    assert_eq!(b.counts("gig").await, (2, 0));
    assert_eq!(a.metrics().await["booking_event_passivations_total"], 1.0);
    assert_eq!(b.metrics().await["booking_active_events"], 1.0);
    // And back, for reads as for writes.
    assert_eq!(a.counts("gig").await, (2, 0));
    assert_eq!(b.metrics().await["booking_event_passivations_total"], 1.0);

    // An owner that cannot answer (stopped, its session alive) keeps the
    // event: the request is refused after its wait, and nothing changes.
    a.send_signal("STOP");
    let refused = b.book(json!("gig"), json!("u3")).await;
    a.send_signal("CONT");
    assert_eq!(
        (refused.status, &refused.body["code"]),
        (503, &json!("event_elsewhere")),
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    let booked = b.book(json!("gig"), json!("u3")).await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");

    // B dies: PostgreSQL ends its session and the lock with it; A takes over.
    b.send_signal("KILL");
    b.wait_exit();
    let booked = a.book(json!("gig"), json!("u4")).await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    assert_eq!(a.counts("gig").await, (4, 0));
    assert_eq!(
        database.sql("SELECT user_id FROM order_log ORDER BY seq"),
        "u1\nu2\nu3\nu4"
    );
}

#[actix_web::test]
async fn a_hot_event_is_handed_over_while_its_owner_is_busy_with_it() {
    let Some(database) = postgres_database() else {
        return;
    };
    let a = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    let b = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    assert_eq!(a.initialize(json!("hot"), 100_000).await.status, 201);
    // Eight connections keep booking it at A, the way a balancer sends an
    // event's load to its owner, until B has booked once.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let load = join_all((0..8).map(|connection| {
        let (a, answered, done) = (&a, &answered, &done);
        async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let user = format!("a{connection}-{n}");
                let answer = a.book(json!("hot"), json!(user)).await;
                statuses.push((answer.status, answer.body["code"].clone()));
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                n += 1;
            }
            statuses
        }
    }));
    let at_b = async {
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 100 {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // A hands the event over and lets B take it before its own load
        // takes it back: B's one request is decided, not refused.
        let booked = b.book(json!("hot"), json!("b")).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        booked
    };
    let (statuses, booked) = futures::join!(load, at_b);
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    assert_eq!(b.metrics().await["booking_event_activations_total"], 1.0);
    // A's own requests waited for the event to come back, or were refused
    // with event_elsewhere while B held it: none failed otherwise.
    for (status, code) in statuses.into_iter().flatten() {
        assert!(
            status == 200 || (status == 503 && code == "event_elsewhere"),
            "{status} {code}"
        );
    }
    let stored = database.sql("SELECT count(*) FROM order_log WHERE user_id = 'b'");
    assert_eq!(stored, "1");
}

#[actix_web::test]
async fn a_retry_replays_its_first_answer_whichever_instance_it_reaches() {
    let Some(database) = postgres_database() else {
        return;
    };
    let a = spawn_on(&database, &[]);
    let b = spawn_on(&database, &[]);
    a.initialize(json!("gig"), 1).await;
    let first = book_with_key(&a, "gig", "u1", "k1").await;
    assert_eq!(first.body["status"], "booked", "{first:?}");
    // B never saw the key: it finds A's answer in PostgreSQL and replays it,
    // without asking for the event.
    let replayed = book_with_key(&b, "gig", "u1", "k1").await;
    assert_eq!((replayed.status, &replayed.body), (200, &first.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(b.metrics().await["booking_active_events"], 0.0);
    // The same key with another request is refused there too.
    let reused = book_with_key(&b, "gig", "u2", "k1").await;
    assert_eq!(
        (reused.status, &reused.body["code"]),
        (422, &json!("idempotency_key_reused"))
    );
    assert_eq!(database.sql("SELECT count(*) FROM order_log"), "1");
}

#[actix_web::test]
async fn a_writer_whose_key_was_used_before_owns_nothing_it_did_not_claim() {
    let Some(database) = postgres_database() else {
        return;
    };
    let a = spawn_on(&database, &[]);
    a.initialize(json!("fair"), 5).await;
    // A's writer ends; the event's row then names a key that sequence
    // `writers` gives again, as it does once it went round.
    let owner_locks = "SELECT string_agg(objid::text, ',') FROM pg_locks
        WHERE locktype = 'advisory' AND classid = 1702257263 AND objsubid = 2 AND granted";
    database.sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND classid = 1702257263 AND database =
             (SELECT oid FROM pg_database WHERE datname = '{}')",
        database.name
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !database.sql(owner_locks).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the writer lives on");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    database.sql(
        "UPDATE owners SET owner = 101 WHERE event_id = 'fair';
         SELECT setval('writers', 100)",
    );
    // A's next writer (the readiness probe opens it) takes key 101, and
    // must not inherit the event: it forgets what the key owned before.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        a.get("/ready").await;
        let stale = database.sql("SELECT count(*) FROM owners WHERE owner = 101");
        if database.sql(owner_locks) == "101" && stale == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "owner locks {:?}, rows of key 101: {stale}",
            database.sql(owner_locks)
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let b = spawn_on(&database, &[]);
    let booked = b.book(json!("fair"), json!("u1")).await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
}

#[actix_web::test]
async fn an_instance_whose_session_ended_answers_nothing_from_its_copy() {
    let Some(database) = postgres_database() else {
        return;
    };
    let a = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    let b = spawn_on(&database, &[("BOOKING_PASSIVATE_AFTER_SECS", "0")]);
    a.initialize(json!("gig"), 5).await;
    a.book(json!("gig"), json!("u1")).await;
    assert_eq!(a.counts("gig").await, (1, 0));
    // A's sessions end, and with its writer's its hold on the event. B takes it.
    database.sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{}' AND application_name = 'event-booking'
         AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')",
        database.name
    ));
    let booked = b.book(json!("gig"), json!("u2")).await;
    assert_eq!(booked.body["status"], "booked", "{booked:?}");
    // A's actor still holds its copy (one booking); it must not answer from
    // it. Whatever A answers now is either a refusal or the stored truth.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = a.status("gig").await;
        match status.status {
            200 => {
                assert_eq!(status.body["bookedTickets"], 2, "{status:?}");
                break;
            }
            503 => assert!(std::time::Instant::now() < deadline, "{status:?}"),
            _ => panic!("{status:?}"),
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn holds_whose_owner_died_are_lapsed_on_time_by_another_instance_unasked() {
    let Some(database) = postgres_database() else {
        return;
    };
    let mut a = spawn_on(&database, &[]);
    let b = spawn_on(&database, &[]);
    let body = json!({"eventId": "gig", "totalTickets": 2});
    assert_eq!(a.post("/api/events", &body).await.status, 201);
    let short = a
        .post(
            "/api/events/gig/holds",
            &json!({"userId": "short", "holdSecs": 2}),
        )
        .await;
    assert_eq!(short.status, 201, "{:?}", short.body);
    let long = a
        .post(
            "/api/events/gig/holds",
            &json!({"userId": "long", "holdSecs": 3600}),
        )
        .await;
    assert_eq!(long.status, 201);
    assert_eq!(
        a.book(json!("gig"), json!("waiter")).await.body["status"],
        "waiting"
    );
    // A dies with the event and its holds: nobody asks B for the event.
    a.send_signal("KILL");
    a.wait_exit();
    assert_eq!(
        b.metric_reaching("booking_holds_lapsed_total", 1.0).await,
        1.0,
        "B took the orphaned event and lapsed the short hold by itself"
    );
    assert_eq!(b.metrics().await["booking_active_events"], 1.0);
    assert_eq!(
        database.sql("SELECT user_id, status FROM order_log WHERE event_id = 'gig' ORDER BY seq"),
        "short|held\nlong|held\nwaiter|waiting\nshort|expired\nwaiter|booked"
    );
    // The live hold keeps its expiry, and B answers for the event now.
    let standing = b.get("/api/events/gig/bookings/long").await.body;
    assert_eq!(
        (&standing["status"], &standing["expiresAt"]),
        (&json!("held"), &long.body["expiresAt"])
    );
}

#[actix_web::test]
async fn streams_end_when_their_event_passivates_on_a_shared_database() {
    // Another instance may take the event next: a stream here would go silent.
    let Some((app, _database)) = spawn_on_postgres(&[("BOOKING_PASSIVATE_AFTER_SECS", "1")]) else {
        return;
    };
    let wait = std::time::Duration::from_secs(10);
    app.initialize(json!("gig"), 5).await;
    app.book(json!("gig"), json!("a")).await;
    let mut status = app.stream("/api/events/gig/stream", &[]).await;
    let mut standing = app.stream("/api/events/gig/bookings/a/stream", &[]).await;
    for stream in [&mut status, &mut standing] {
        assert_eq!(stream.status, 200);
        stream.next_event(wait).await.expect("the first event");
    }
    assert_eq!(
        app.metric_reaching("booking_event_passivations_total", 1.0)
            .await,
        1.0
    );
    for stream in [&mut status, &mut standing] {
        assert!(stream.next_event(wait).await.is_none());
        assert!(stream.ended, "the stream ended at the passivation");
    }
    // Reconnected, it brings the event back, and follows it.
    let mut status = app.stream("/api/events/gig/stream", &[]).await;
    status.next_event(wait).await.expect("the status at once");
    app.book(json!("gig"), json!("b")).await;
    let next = status.next_event(wait).await.expect("the booking");
    assert_eq!(next.data["bookedTickets"], 2, "{next:?}");
}
