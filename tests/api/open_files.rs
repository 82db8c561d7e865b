//! Thousands of connections where the soft limit on open files is low.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::{skip, unstarted_app_with};

const CONNECTIONS: usize = 3_000;

#[actix_web::test]
async fn started_with_a_soft_limit_of_1024_files_it_answers_3000_connections_at_once() {
    // This test's own clients need as many files, and the server a hard
    // limit above the connections, to raise its soft limit to.
    let wanted = 2 * CONNECTIONS as u64;
    let mut ours = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    if ours < wanted && rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted).is_ok() {
        ours = wanted; // Root may raise the hard limit too.
    }
    if ours < wanted {
        return skip(format!(
            "the hard limit on open files here is {ours}, too low to show a raise"
        ));
    }
    // Connections stay open as long as the test needs: none frees a file
    // for another while the answers are read.
    let mut app = unstarted_app_with(&[("BOOKING_KEEP_ALIVE_SECS", "120")]);
    app.soft_open_files = Some(1024);
    app.start();
    let address = app.address.trim_start_matches("http://").to_string();

    // Every connection is open, and has sent its request, before any answer is read.
    let mut clients: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|n| {
            let mut client = TcpStream::connect(&address)
                .unwrap_or_else(|error| panic!("connection {n}: {error}"));
            client
                .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            client
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (n, client) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        client
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0; 512];
        while !answer.ends_with(b"{\"status\":\"ok\"}") {
            match client.read(&mut buffer) {
                Ok(0) => panic!("connection {n} closed without an answer: {answer:?}"),
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
                Err(error) => panic!("connection {n} got no answer: {error}"),
            }
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "connection {n}");
    }
    let log = app.log();
    assert!(
        log.contains("open files: at most") && log.contains("(the soft limit was 1024)"),
        "the effective limit is logged:\n{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
}
