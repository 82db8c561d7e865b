//! The benchmark's stream part, on the server of the virtual-actors run
//! once its events passivated: a status stream opened on each of `STREAMS`
//! of them holds no actor (the events stay passivated), so what an open
//! stream costs is its connection; and a booking at an event with a stream
//! open (activating it from the database) reaches the stream right after
//! its own answer.

use std::fmt::Write as _;
use std::pin::Pin;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::api::{Api, Outcome};
use crate::spawn::SpawnedServer;

/// Status streams opened, one per passivated event.
const STREAMS: usize = 2_000;

/// Bookings timed from their request to their status on the stream.
const SAMPLES: usize = 200;

/// Longest wait for a stream's next status.
const GIVE_UP: Duration = Duration::from_secs(10);

type Events =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<awc::error::PayloadError>>>>>;

pub struct StreamFigures {
    pub streams: usize,
    /// RSS before the streams were opened, and with them open.
    pub rss_before: u64,
    pub rss_open: u64,
    /// Active events once the streams were open (0: they hold no actor).
    pub active_with_streams: f64,
    /// Medians over `SAMPLES` bookings, from the request: to its answer,
    /// and to its status on the event's stream.
    pub answered: Duration,
    pub streamed: Duration,
}

/// Opens a stream on each of the first `STREAMS` `events` (all passivated,
/// one booked user each) of `server`, then books a second user at the
/// first `SAMPLES`, one at a time.
pub fn measure(
    server: &SpawnedServer,
    events: &[String],
    concurrency: usize,
) -> Result<StreamFigures, String> {
    let events = &events[..events.len().min(STREAMS)];
    let rss_before = server.rss_bytes()?;
    actix_web::rt::System::new().block_on(async {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().limit(0))
            .disable_timeout()
            .finish();
        let opened: Vec<Result<Events, String>> = futures::stream::iter(events)
            .map(|event| open(&client, server.url(), event))
            .buffered(concurrency)
            .collect()
            .await;
        let mut streams = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
        for stream in &mut streams {
            next_status(stream).await?;
        }
        let api = Api::new(server.url(), 1);
        let active_with_streams = api.metric("booking_active_events").await?;
        let rss_open = server.rss_bytes()?;
        let mut answered = Vec::new();
        let mut streamed = Vec::new();
        for (event, stream) in events.iter().zip(&mut streams).take(SAMPLES) {
            let sent = Instant::now();
            let (_, outcome) = api.book(event, 1).await;
            answered.push(sent.elapsed());
            if outcome != Outcome::Booked {
                return Err(format!("booking a second user at {event}: {outcome:?}"));
            }
            while next_status(stream).await?["bookedTickets"] != 2 {}
            streamed.push(sent.elapsed());
        }
        Ok(StreamFigures {
            streams: events.len(),
            rss_before,
            rss_open,
            active_with_streams,
            answered: median(answered),
            streamed: median(streamed),
        })
    })
}

async fn open(client: &awc::Client, base: &str, event: &str) -> Result<Events, String> {
    let url = format!("{base}/api/events/{event}/stream");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{url}: {}", response.status()));
    }
    Ok(Box::pin(response.eventsource()))
}

async fn next_status(stream: &mut Events) -> Result<Value, String> {
    match actix_web::rt::time::timeout(GIVE_UP, stream.next()).await {
        Ok(Some(Ok(event))) => serde_json::from_str(&event.data).map_err(|e| e.to_string()),
        Ok(Some(Err(error))) => Err(format!("a stream failed: {error}")),
        Ok(None) => Err("a stream ended".into()),
        Err(_) => Err(format!("no status within {GIVE_UP:?}")),
    }
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort_unstable();
    durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or_default()
}

/// The rows of the virtual-actors table.
pub fn rows(figures: &StreamFigures) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| {} status streams open on passivated events: events active, RSS per stream | {:.0} active, {:.1} KiB | streams hold no actor |",
        figures.streams,
        figures.active_with_streams,
        figures.rss_open.saturating_sub(figures.rss_before) as f64 / 1024.0 / figures.streams as f64
    );
    let _ = writeln!(
        md,
        "| a booking at such an event (it activates): to its answer / to its status on the stream, median of {SAMPLES} | {:.2} / {:.2} ms | |",
        figures.answered.as_secs_f64() * 1e3,
        figures.streamed.as_secs_f64() * 1e3
    );
    md
}
