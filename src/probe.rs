//! A plain HTTP/1.1 GET over std's TCP, with no client library and no
//! runtime: for the `healthcheck` command, and to wait until a server that
//! was just started is ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest wait to connect, send or read.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The status line of `GET path` at `address`, e.g. `HTTP/1.1 200 OK`.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

/// Whether a status line says 200.
pub fn is_ok(status_line: &str) -> bool {
    status_line.split_whitespace().nth(1) == Some("200")
}
