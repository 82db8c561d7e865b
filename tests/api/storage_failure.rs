//! A write that cannot be stored is answered 503 and leaves no trace; reads
//! go on working, and writes work again once the cause is gone.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::future::join_all;
use rusqlite::Connection;
use serde_json::json;

use crate::helpers::{skip, spawn_app, spawn_app_with, TestApp, BACK_TO_VERSION_3};

const UNAVAILABLE: &str = "Storage unavailable";

#[actix_web::test]
async fn a_database_locked_too_long_refuses_writes_until_released() {
    let mut app = spawn_app_with(&[("BOOKING_BUSY_TIMEOUT_MS", "100")]);
    app.initialize(json!(1), 2).await;
    app.book(json!(1), json!("a")).await;

    // Another process takes the write lock and keeps it.
    let intruder = Connection::open(app.database()).unwrap();
    intruder.busy_timeout(Duration::from_secs(5)).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let refused = app.book(json!(1), json!("b")).await;
    assert_eq!(
        (refused.status, refused.body),
        (
            503,
            json!({"error": UNAVAILABLE, "code": "storage_unavailable"})
        )
    );
    let storm = join_all((0..20).map(|i| app.book(json!(1), json!(format!("s{i}"))))).await;
    assert!(storm.iter().all(|a| a.status == 503), "{storm:?}");
    assert_eq!(app.cancel(json!(1), json!("a")).await.status, 503);
    assert_eq!(app.initialize(json!(2), 5).await.status, 503);

    // Reads work, and show only what is stored.
    assert_eq!(app.counts("1").await, (1, 0));
    assert_eq!(app.user_status("1", "a").await.body["status"], "booked");
    assert_eq!(app.user_status("1", "b").await.status, 404);
    assert_eq!(app.status("2").await.status, 404);

    intruder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        app.book(json!(1), json!("b")).await.body["status"],
        "booked"
    );
    assert_eq!(app.book(json!(1), json!("s0")).await.body["position"], 1);
    assert_eq!(app.initialize(json!(2), 5).await.status, 201);

    app.restart();
    assert_eq!(app.counts("1").await, (2, 1));
    assert_eq!(app.user_status("1", "s1").await.status, 404);
}

/// Books users named `width` characters long at event 1 until a booking is
/// refused for want of room; returns those acknowledged, and the refused one.
async fn book_until_full(app: &TestApp, width: usize) -> (Vec<String>, String) {
    let mut acknowledged = Vec::new();
    let refused = loop {
        let user = format!("{:0>width$}", acknowledged.len());
        let answer = app.book(json!(1), json!(user)).await;
        match answer.status {
            200 => acknowledged.push(user),
            503 => break user,
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
        assert!(acknowledged.len() < 20_000, "the database never filled up");
    };
    assert!(!acknowledged.is_empty());
    assert_eq!(
        app.book(json!(1), json!(refused)).await.body,
        json!({"error": UNAVAILABLE, "code": "storage_unavailable"}),
        "still no room"
    );
    (acknowledged, refused)
}

/// A server on a full database: every acknowledged booking is there and
/// readable, nothing else; a write is refused; `/ready` says why.
async fn assert_full_but_readable(app: &TestApp, acknowledged: &[String], refused: &str) {
    let stored = acknowledged.len() as u64;
    assert_eq!(
        app.counts("1").await,
        (stored, 0),
        "exactly what was acknowledged"
    );
    for user in [&acknowledged[0], &acknowledged[acknowledged.len() - 1]] {
        assert_eq!(app.user_status("1", user).await.body["status"], "booked");
    }
    assert_eq!(app.user_status("1", refused).await.status, 404);
    assert_eq!(
        app.book(json!(1), json!(refused)).await.body,
        json!({"error": UNAVAILABLE, "code": "storage_unavailable"})
    );
    assert_eq!(app.counts("1").await, (stored, 0));
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    let reason = ready.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("full"),
        "the reason names the full disk: {reason:?}"
    );
    assert_eq!(app.get("/health").await.status, 200);
}

#[actix_web::test]
async fn a_full_disk_refuses_writes_and_acknowledges_only_what_is_stored() {
    // A database capped at 12 pages of 4 KiB fills up after some 150 long-named bookings.
    let mut app = spawn_app_with(&[("BOOKING_MAX_PAGE_COUNT", "12")]);
    app.initialize(json!(1), 100_000).await;
    let (acknowledged, refused) = book_until_full(&app, 200).await;
    assert_full_but_readable(&app, &acknowledged, &refused).await;
    let stored = acknowledged.len() as u64;

    // A restart on the full database starts, reads everything, and refuses writes.
    app.restart();
    assert_full_but_readable(&app, &acknowledged, &refused).await;

    // Room again (here: the cap lifted), and writes work; every acknowledged booking is there.
    app.set_env("BOOKING_MAX_PAGE_COUNT", None);
    app.restart();
    assert_eq!(app.counts("1").await, (stored, 0));
    assert_eq!(
        app.user_status("1", &acknowledged[stored as usize - 1])
            .await
            .body["status"],
        "booked"
    );
    assert_eq!(app.user_status("1", &refused).await.status, 404);
    assert_eq!(
        app.book(json!(1), json!(refused)).await.body["status"],
        "booked"
    );
}

#[actix_web::test]
async fn failures_amid_a_storm_acknowledge_exactly_what_is_stored() {
    // Near the cap, rows fit or not depending on their size, so commits fail
    // and succeed in turn while bookings are decided on top of the failed ones. None of those may be acknowledged, and nothing
    // acknowledged may be missing.
    let mut app = spawn_app_with(&[
        ("BOOKING_MAX_PAGE_COUNT", "12"),
        // Many small transactions, so failed and successful ones alternate.
        ("BOOKING_COMMIT_BATCH_LIMIT", "4"),
    ]);
    app.initialize(json!(1), 60).await;
    // Ids of mixed lengths: after a long row fails, a shorter one may still fit.
    let users: Vec<String> = (0..400usize)
        .map(|i| format!("{i:x>width$}", width = 1 + i * 37 % 250))
        .collect();
    let answers = join_all(users.iter().map(|user| app.book(json!(1), json!(user)))).await;
    assert!(
        answers.iter().all(|a| a.status == 200 || a.status == 503),
        "{answers:?}"
    );
    let acknowledged: Vec<(&String, &serde_json::Value)> = users
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.status == 200)
        .map(|(u, a)| (u, &a.body))
        .collect();
    let refused = answers.len() - acknowledged.len();
    assert!(refused > 0, "the cap was never reached");

    app.set_env("BOOKING_MAX_PAGE_COUNT", None);
    app.restart();
    let (booked, waiting) = app.counts("1").await;
    assert_eq!(
        booked + waiting,
        acknowledged.len() as u64,
        "stored = acknowledged, no more, no less"
    );
    assert!(
        booked <= 60 && (waiting == 0 || booked == 60),
        "{booked} booked, {waiting} waiting"
    );
    for (user, told) in acknowledged {
        let stored = app.user_status("1", user).await.body;
        assert_eq!(
            (&stored["status"], &stored["position"]),
            (&told["status"], &told["position"]),
            "{user}"
        );
    }
}

#[actix_web::test]
async fn an_event_whose_stored_orders_contradict_each_other_is_refused_and_the_others_serve() {
    let mut app = spawn_app();
    app.initialize(json!("broken"), 1).await;
    app.initialize(json!("fine"), 1).await;
    app.stop_with("TERM");
    // Two holders of its one ticket: no state can be rebuilt from that.
    let tamper = Connection::open(app.database()).unwrap();
    tamper
        .execute_batch(
            "INSERT INTO order_log (event_id, user_id, status)
             VALUES ('broken', 'u1', 'booked'), ('broken', 'u2', 'booked');",
        )
        .unwrap();
    drop(tamper);

    // Events are read one at a time, when first asked for: the server starts,
    // and only the broken event is refused, with a 503 that changes nothing.
    app.start();
    assert_eq!(app.get("/ready").await.status, 200);
    for _ in 0..2 {
        let refused = app.book(json!("broken"), json!("u3")).await;
        assert_eq!(
            (refused.status, &refused.body["code"]),
            (503, &json!("storage_unavailable")),
            "{refused:?}"
        );
        assert_eq!(app.status("broken").await.status, 503);
    }
    assert_eq!(app.book(json!("fine"), json!("u1")).await.status, 200);
    assert_eq!(app.counts("fine").await, (1, 0));
    let log = app.log();
    assert!(
        log.contains("activating event broken failed")
            && log.contains("2 tickets booked or held of 1"),
        "{log}"
    );
}

/// A tmpfs of a few MiB, mounted for one test and unmounted after it.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts one at `path`; `Err` says why it could not (not root, no
    /// permission in a container).
    fn mount(path: PathBuf, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&path).map_err(|error| error.to_string())?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|error| error.to_string())?;
        if !mounted.status.success() {
            return Err(String::from_utf8_lossy(&mounted.stderr).trim().to_string());
        }
        Ok(SmallDisk { path })
    }

    /// Writes to `name` until the disk has no byte left.
    fn fill(&self, name: &str) {
        let mut file = File::create(self.path.join(name)).unwrap();
        for chunk in [64 << 10, 4 << 10, 1] {
            while file.write_all(&vec![0; chunk]).is_ok() {}
        }
        let _ = file.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[actix_web::test]
async fn a_server_restarts_on_a_full_disk_and_takes_writes_again_once_space_is_freed() {
    let folder = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(folder.path().join("disk"), "3m") {
        Ok(disk) => disk,
        Err(why) => {
            return skip(format!(
                "cannot mount a tmpfs here ({why}); a restart at the size cap runs in \
                 a_full_disk_refuses_writes_and_acknowledges_only_what_is_stored, and the unit test \
                 storage::tests::opening_a_current_database_writes_nothing shows start-up writes nothing"
            ))
        }
    };
    // Room to free later, taken before the server fills the rest.
    std::fs::write(disk.path.join("ballast"), vec![1; 512 << 10]).unwrap();
    let database = disk.path.join("bookings.db");
    let mut app = spawn_app_with(&[("BOOKING_DATABASE", database.to_str().unwrap())]);
    assert_eq!(app.initialize(json!(1), 1_000_000).await.status, 201);
    let (acknowledged, refused) = book_until_full(&app, 16).await;
    // Every last byte taken, as on a disk that filled up for good.
    disk.fill("filler");
    let stopped = app.stop_with("TERM");
    assert!(stopped.success(), "stopped with {stopped}");
    let wal = std::fs::metadata(disk.path.join("bookings.db-wal")).map_or(0, |m| m.len());
    assert!(wal > 0, "the last orders are in the WAL only");

    // It starts (no write at start-up), recovers the WAL's orders too, and refuses writes.
    app.start();
    assert_full_but_readable(&app, &acknowledged, &refused).await;

    // Space freed: writes succeed again, and the server is ready, with no restart.
    std::fs::remove_file(disk.path.join("filler")).unwrap();
    std::fs::remove_file(disk.path.join("ballast")).unwrap();
    let mut booked = None;
    for _ in 0..100 {
        let answer = app.book(json!(1), json!(refused)).await;
        if answer.status == 200 {
            booked = Some(answer);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(booked.is_some(), "writes never resumed");
    let mut ready = 0;
    for _ in 0..100 {
        ready = app.get("/ready").await.status;
        if ready == 200 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200);
    let stored = acknowledged.len() as u64 + 1;
    assert_eq!(app.counts("1").await, (stored, 0));
    app.restart();
    assert_eq!(app.counts("1").await, (stored, 0));
    drop(app);
    drop(disk);
}

#[actix_web::test]
async fn a_start_that_must_write_waits_on_a_full_disk_for_space_then_starts() {
    let folder = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(folder.path().join("disk"), "3m") {
        Ok(disk) => disk,
        Err(why) => return skip(format!("cannot mount a tmpfs here ({why})")),
    };
    std::fs::write(disk.path.join("ballast"), vec![1; 512 << 10]).unwrap();
    let database = disk.path.join("bookings.db");
    let mut app = spawn_app_with(&[("BOOKING_DATABASE", database.to_str().unwrap())]);
    app.initialize(json!(1), 100).await;
    for user in 0..20 {
        assert_eq!(app.book(json!(1), json!(user)).await.status, 200);
    }
    assert!(app.stop_with("TERM").success());
    // As the version before this one left it: its next start must upgrade it.
    let old = Connection::open(&database).unwrap();
    old.execute_batch(BACK_TO_VERSION_3).unwrap();
    // The last connection to close checkpoints and deletes the -wal and
    // -shm files: SQLite must write the -shm again before it reads anything.
    drop(old);
    assert!(!disk.path.join("bookings.db-shm").exists());
    disk.fill("filler");

    // Space is freed once the server says it waits for it, not before.
    let (log, space) = (app.dir.path().join("server.log"), disk.path.clone());
    let freer = std::thread::spawn(move || {
        for _ in 0..600 {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("no room to open the database") {
                std::fs::remove_file(space.join("filler")).unwrap();
                std::fs::remove_file(space.join("ballast")).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    app.start();
    assert!(
        freer.join().unwrap(),
        "the server never said it waits for room"
    );
    assert!(app
        .log()
        .contains("the database is open: there is room again"));
    assert_eq!(app.counts("1").await, (20, 0));
    assert_eq!(app.book(json!(1), json!("after")).await.status, 200);
    drop(app);
    drop(disk);
}

#[actix_web::test]
async fn a_start_that_the_size_cap_leaves_no_room_for_exits_instead_of_waiting() {
    let mut app = spawn_app_with(&[("BOOKING_MAX_PAGE_COUNT", "12")]);
    app.initialize(json!(1), 100_000).await;
    book_until_full(&app, 200).await;
    app.stop_with("TERM");
    // An older schema, in a file at its cap: the upgrade needs a page the
    // cap refuses, on a disk with room. Waiting for space would be for ever.
    let old = Connection::open(app.database()).unwrap();
    old.execute_batch(&format!("{BACK_TO_VERSION_3}; PRAGMA max_page_count = 12;"))
        .unwrap();
    for n in 0.. {
        let user = format!("{n:x>200}");
        let row = "INSERT INTO order_log (event_id, user_id, status) VALUES ('1', ?1, 'cancelled')";
        if old.execute(row, [user]).is_err() {
            break;
        }
    }
    drop(old);
    let exited = app.start_to_exit();
    assert!(!exited.success(), "exit status {exited}");
    let log = app.log();
    assert!(log.contains("database or disk is full"), "{log}");
    assert!(!log.contains("waiting for space"), "{log}");
    // With the cap raised, it upgrades and starts.
    app.set_env("BOOKING_MAX_PAGE_COUNT", Some("1000"));
    app.start();
    assert_eq!(app.status("1").await.status, 200);
}
