//! The booking path's way to events: sends a request to its event's actor
//! (activating the event if it is not active), creates events, and stores
//! the answers of idempotent requests that reach no event.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use dashmap::Entry;
use futures::channel::oneshot;
use futures::FutureExt;

use super::directory::{Directory, Slot, Takeover, Waiting};
use super::event::{BookingError, EventActor, Recorder, Reply};
use super::gate::Gate;
use super::order_store::{Backlog, LoadAnswer, NotStored, OrderStore, Persist, QueueSlot};
use super::status_feed::StatusFeed;
use super::threads::WorkerThreads;
use crate::booking::{EventSettings, EventState, Refusal};
use crate::idempotency::{Answer, KeyId, Pending, StoredKey};
use crate::ids::EventId;
use crate::storage::{Change, Database};
use crate::telemetry;

/// How often each instance on a shared database looks for events with live
/// holds that no instance owns (see `EventRegistry::watch_holds`): a hold
/// whose owner died lapses within about this much after its expiry, or after
/// PostgreSQL noticed the owner's death, whichever is later.
const ORPHANED_HOLDS_EVERY: Duration = Duration::from_secs(1);

/// The limits of the booking path, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages an event actor's mailbox holds before requests are refused.
    pub mailbox_capacity: usize,
    /// Changes waiting for the store before requests are refused.
    pub store_backlog: usize,
    /// Longest wait for an actor's answer (its activation included) before
    /// the request gets 503.
    pub request_timeout: Duration,
    /// An event actor idle this long stops (passivation); `None`: never.
    pub passivate_after: Option<Duration>,
    /// A hold's duration in seconds when neither its request nor its event names one.
    pub hold_secs: u32,
}

/// Finds each event's actor by its id, through the [`Directory`] of active
/// events, and activates the event when it has none.
///
/// Nothing is read at start: requests wait only until every worker thread
/// has started and the idempotency keys are loaded ([`recover`](Self::recover)),
/// so that events spread over every worker from the first.
pub struct EventRegistry {
    directory: Arc<Directory>,
    /// Opened once the server can take requests for events; they wait for it.
    recovered: Gate,
    threads: Arc<WorkerThreads>,
    store: Addr<OrderStore>,
    /// The bound on the store's queue: book and cancel requests take a place here.
    backlog: Arc<Backlog>,
    limits: Limits,
}

impl EventRegistry {
    /// A registry not yet recovered, whose actors run on `threads` and are
    /// read from `database`. Fails if its reader threads cannot start.
    pub fn new(
        store: Addr<OrderStore>,
        database: Database,
        threads: Arc<WorkerThreads>,
        limits: Limits,
        feed: Arc<StatusFeed>,
    ) -> std::io::Result<Self> {
        let directory = Directory::new(
            store.clone(),
            database.clone(),
            threads.clone(),
            limits.mailbox_capacity,
            limits.passivate_after,
            limits.hold_secs,
            feed,
        )?;
        let directory = Arc::new(directory);
        let listening = Arc::downgrade(&directory);
        database.listen_for_handoffs(Box::new(move |event| {
            if let Some(directory) = listening.upgrade() {
                directory.hand_off(&event);
            }
        }));
        Ok(EventRegistry {
            directory,
            recovered: Gate::default(),
            threads,
            store,
            backlog: Backlog::new(limits.store_backlog),
            limits,
        })
    }

    /// Lets the waiting requests in, once every thread to place actors on has started.
    pub async fn recover(&self) {
        self.threads.all_started().await;
        self.recovered.open();
    }

    /// Keeps every event with live holds active somewhere, so that its
    /// actor lapses them on time. At the start, the events with holds are
    /// activated: those whose time passed while the server was down lapse at
    /// once, in order of expiry. Where instances share the database, this
    /// goes on every `ORPHANED_HOLDS_EVERY`: an owner that died (or lost its
    /// session) left its events with holds to whichever instance takes them
    /// first. Only events that no instance owns are taken; an owner keeps its
    /// events with holds active, and is never asked to hand them over. In
    /// the background: readiness does not wait for it.
    pub async fn watch_holds(&self) {
        let database = self.directory.database();
        loop {
            self.wake_events_with_holds(&database).await;
            if !database.fences() {
                // One instance: its events with holds never passivate.
                return;
            }
            actix_web::rt::time::sleep(ORPHANED_HOLDS_EVERY).await;
        }
    }

    /// Activates the events with live holds that no instance owns.
    async fn wake_events_with_holds(&self, database: &Database) {
        let reading = database.clone();
        let found = actix_web::rt::task::spawn_blocking(move || reading.events_with_holds()).await;
        let events = match found {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => {
                return log::warn!("could not look for events with holds to lapse: {error}")
            }
            Err(_) => return,
        };
        let mut woken = 0;
        for event in &events {
            let waiting = match self.directory.slots.get(event) {
                // Active here, or on its way in or out: its actor sees to it.
                Some(_) => continue,
                None => self.directory.activate_if_free(event),
            };
            match self.within(waiting.over()).await {
                Ok(()) => woken += 1,
                // Taken by another instance meanwhile.
                Err(BookingError::Elsewhere) => {}
                Err(error) => {
                    log::warn!("event {event}, which has holds, could not be activated: {error:?}")
                }
            }
        }
        if woken > 0 {
            log::info!("{woken} events with holds activated, to lapse them on time");
        }
    }

    /// A hold's duration in seconds when neither its request nor its event
    /// names one (`hold_secs`).
    pub fn hold_secs(&self) -> u32 {
        self.limits.hold_secs
    }

    /// Whether requests for events are let in.
    pub fn is_recovered(&self) -> bool {
        self.recovered.is_open()
    }

    /// Waits until recovery is over, at most the request time-out.
    pub async fn recovered(&self) -> Result<(), BookingError> {
        actix_web::rt::time::timeout(self.limits.request_timeout, self.recovered.opened())
            .await
            .map_err(|_| BookingError::Recovering)
    }

    /// Hands memory freed by passivated actors back to the system, if any
    /// passivated since the last call: for the housekeeping timer.
    pub fn give_back_memory(&self) {
        self.directory.give_back_memory();
    }

    /// Whether the event has an actor now (no activation to wait for).
    pub fn is_active(&self, id: &EventId) -> bool {
        self.directory
            .slots
            .get(id)
            .is_some_and(|slot| matches!(slot.value(), Slot::Active(_)))
    }

    /// `Ok` if the event exists (activating it), `EventNotFound` if not.
    pub async fn find(&self, id: &EventId) -> Result<(), BookingError> {
        self.within(async {
            loop {
                let waiting = match self.directory.slots.get(id) {
                    Some(slot) => match slot.value() {
                        Slot::Active(_) => return Ok(()),
                        other => other.waiting(),
                    },
                    None => self.directory.activate(id),
                };
                waiting.over().await?;
            }
        })
        .await
    }

    /// Admits a book or cancel (a place in the store's queue), sends it to
    /// the event's actor, activating the event first if needed, and waits for
    /// its answer, which comes once the change is committed (or at once if it
    /// is refused). A full store queue or mailbox refuses at once; a slow
    /// answer times out.
    pub async fn forward<M, T>(
        &self,
        id: &EventId,
        message: impl FnOnce(Reply<T>, QueueSlot) -> M,
    ) -> Result<T, BookingError>
    where
        M: Message<Result = ()> + Send + 'static,
        EventActor: Handler<M>,
    {
        let slot = self.backlog.reserve().ok_or(BookingError::Busy)?;
        let (reply, replied) = oneshot::channel();
        let mut message = Some(message(reply, slot));
        self.within(async move {
            while let Some(waiting) = self.try_send(id, &mut message)? {
                // Boxed: a rare path, kept out of every booking's future (see `routes::order`).
                Box::pin(waiting.over()).await?;
            }
            replied.await.unwrap_or(Err(BookingError::Stopped))
        })
        .await
    }

    /// Sends `message` to the event's actor if it is active, else says what
    /// to wait for (starting its activation if nobody has).
    fn try_send<M>(
        &self,
        id: &EventId,
        message: &mut Option<M>,
    ) -> Result<Option<Waiting>, BookingError>
    where
        M: Message<Result = ()> + Send + 'static,
        EventActor: Handler<M>,
    {
        let waiting = match self.directory.slots.get(id) {
            Some(slot) => match slot.value() {
                // Sent under the map's lock: the actor cannot begin to
                // passivate between the look-up and the send, so it will
                // handle this message before it stops.
                Slot::Active(actor) => match actor.try_send(message.take().expect("sent once")) {
                    Ok(()) => return Ok(None),
                    Err(SendError::Full(_)) => {
                        telemetry::queue_full("event");
                        return Err(BookingError::Busy);
                    }
                    Err(SendError::Closed(unsent)) => {
                        *message = Some(unsent);
                        drop(slot);
                        self.forget_dead(id);
                        Waiting::Nothing
                    }
                },
                other => other.waiting(),
            },
            None => self.directory.activate(id),
        };
        Ok(Some(waiting))
    }

    /// Asks the event's actor a question (a read), activating the event if
    /// needed, and waits at most the time-out. Asked again if the actor
    /// stopped before it answered.
    pub async fn ask<M, T>(&self, id: &EventId, message: M) -> Result<T, BookingError>
    where
        M: Message<Result = Result<T, BookingError>> + Clone + Send + 'static,
        M::Result: Send,
        EventActor: Handler<M>,
    {
        self.within(async {
            loop {
                let waiting = match self.directory.slots.get(id) {
                    Some(slot) => match slot.value() {
                        Slot::Active(actor) => Ok(actor.send(message.clone())),
                        other => Err(other.waiting()),
                    },
                    None => Err(self.directory.activate(id)),
                };
                match waiting {
                    Ok(asked) => match asked.await {
                        Ok(answer) => return answer,
                        // It passivated with the question unread, or died: ask again.
                        Err(MailboxError::Closed) => self.forget_dead(id),
                        Err(MailboxError::Timeout) => return Err(BookingError::TimedOut),
                    },
                    Err(waiting) => Box::pin(waiting.over()).await?,
                }
            }
        })
        .await
    }

    /// Empties the slot of an actor whose mailbox is closed though it is
    /// active (it died: a panic in a handler), so that the next request
    /// activates the event again from what is stored.
    fn forget_dead(&self, id: &EventId) {
        self.directory.slots.remove_if(
            id,
            |_, slot| matches!(slot, Slot::Active(actor) if !actor.connected()),
        );
    }

    /// Creates the event, answering once it is committed (with the answer of
    /// an idempotent request, if `recorder` renders one); refuses if it is
    /// stored already, active or not. Run it as a task of its own: a client
    /// hanging up must not leave the event's slot `Starting`.
    pub async fn initialize(
        &self,
        id: EventId,
        settings: EventSettings,
        recorder: Option<Recorder<(), Refusal>>,
    ) -> Result<(), BookingError> {
        // Its place in the store's queue first: a full queue refuses at once.
        let place = self.backlog.reserve().ok_or(BookingError::Busy)?;
        let (started, starting) = oneshot::channel();
        let starting = starting.shared();
        // Takes the event's slot, unless the event exists or another request has the slot.
        loop {
            // Decided under the entry's lock, awaited after it: a shard's lock
            // held across an await would stop every thread that touches the shard.
            let waiting = match self.directory.slots.entry(id.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(Slot::Starting(starting.clone()));
                    break;
                }
                Entry::Occupied(slot) => match slot.get() {
                    Slot::Active(_) | Slot::Passivating(_) => None,
                    Slot::Starting(other) => Some(Waiting::Start(other.clone())),
                },
            };
            let Some(waiting) = waiting else {
                return self.refuse(Refusal::AlreadyInitialized, recorder).await;
            };
            match waiting.over().await {
                Ok(()) => return self.refuse(Refusal::AlreadyInitialized, recorder).await,
                // The other start found no such event: this one may create it.
                Err(BookingError::EventNotFound) => {}
                Err(error) => return Err(error),
            }
        }
        // The slot is this request's: the event may be stored, though not active.
        let mut recorder = recorder;
        let (outcome, result) = match self.directory.read(&id, Takeover::AskOwner).await {
            Ok((session, Some(state))) => {
                let actor = self.directory.start_actor(id.clone(), state, session).await;
                let exists = BookingError::Refused(Refusal::AlreadyInitialized);
                (Ok(Some(actor)), Err(exists))
            }
            Ok((session, None)) => match self.create(&id, settings, recorder.take(), place).await {
                Ok(()) => {
                    let state = EventState::new(settings);
                    let actor = self.directory.start_actor(id.clone(), state, session).await;
                    (Ok(Some(actor)), Ok(()))
                }
                Err(error) => (Ok(None), Err(error)),
            },
            Err(error) => (Err(error), Err(error)),
        };
        match &outcome {
            Ok(Some(actor)) => {
                self.directory.slots.insert(id, Slot::Active(actor.clone()));
                telemetry::event_activated();
            }
            _ => {
                self.directory.slots.remove(&id);
                self.directory.release(&id);
            }
        }
        let _ = started.send(outcome);
        match result {
            Err(BookingError::Refused(refusal)) => self.refuse(refusal, recorder).await,
            result => result,
        }
    }

    /// Commits the event's creation, with the answer `recorder` renders.
    async fn create(
        &self,
        id: &EventId,
        settings: EventSettings,
        recorder: Option<Recorder<(), Refusal>>,
        place: QueueSlot,
    ) -> Result<(), BookingError> {
        let change = Change::CreateEvent {
            event: id.clone(),
            settings,
        };
        let answer = recorder.map(|record| record(Ok(&())));
        self.persist(Some(change), answer, place).await
    }

    /// Refuses a creation; stores the refusal as the answer `recorder` renders.
    async fn refuse(
        &self,
        refusal: Refusal,
        recorder: Option<Recorder<(), Refusal>>,
    ) -> Result<(), BookingError> {
        if let Some(record) = recorder {
            self.store_answer(record(Err(refusal))).await?;
        }
        Err(BookingError::Refused(refusal))
    }

    /// Stores the answer of an idempotent request that changed nothing and
    /// reached no event actor (an unknown event, say).
    pub async fn store_answer(&self, answer: Pending) -> Result<(), BookingError> {
        let place = self.backlog.reserve().ok_or(BookingError::Busy)?;
        self.persist(None, Some(answer), place).await
    }

    /// Where instances share the database: the answer another instance
    /// stored under `id` at or after `since` (unix seconds), if any. `None`
    /// at once with one instance, whose memory knows every key.
    pub async fn answered_elsewhere(
        &self,
        id: &KeyId,
        since: i64,
    ) -> Result<Option<StoredKey>, BookingError> {
        let database = self.directory.database();
        if !database.fences() {
            return Ok(None);
        }
        let id = id.clone();
        let found = actix_web::rt::task::spawn_blocking(move || database.find_answer(&id, since));
        match self
            .within(async { found.await.map_err(|_| BookingError::Stopped) })
            .await?
        {
            Ok(found) => Ok(found),
            Err(error) => {
                log::error!("looking up an idempotency key failed: {error}");
                Err(BookingError::StorageUnavailable)
            }
        }
    }

    /// The stored answer of an idempotent request, in row `seq`, to replay.
    pub async fn stored_answer(&self, seq: i64) -> Result<Answer, BookingError> {
        self.within(async {
            match self.store.send(LoadAnswer { seq }).await {
                Ok(Ok(Some(answer))) => Ok(answer),
                // Deleted as expired between the look-up in memory and now.
                Ok(Ok(None)) | Ok(Err(NotStored)) => Err(BookingError::StorageUnavailable),
                Err(_) => Err(BookingError::Stopped),
            }
        })
        .await
    }

    /// Sends a change and/or an answer that no event actor decided to the
    /// store, in the queue `place` it took, and waits until it is committed.
    async fn persist(
        &self,
        change: Option<Change>,
        answer: Option<Pending>,
        slot: QueueSlot,
    ) -> Result<(), BookingError> {
        let (done, committed) = oneshot::channel();
        let done = Box::new(move |stored| {
            let _ = done.send(stored);
        });
        self.store.do_send(Persist {
            change,
            answer,
            origin: None,
            published: None,
            standings: Vec::new(),
            done,
            slot: Some(slot),
        });
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(NotStored)) => Err(BookingError::StorageUnavailable),
            Err(oneshot::Canceled) => Err(BookingError::Stopped),
        }
    }

    /// `work`, or `TimedOut` once the request time-out has passed.
    ///
    /// Not an `async fn`, which would hold `work` twice in its state (before
    /// and after it moves into the timer): a request's future carries the
    /// state of everything it awaits (see `routes::order`).
    pub fn within<T>(
        &self,
        work: impl Future<Output = Result<T, BookingError>>,
    ) -> impl Future<Output = Result<T, BookingError>> {
        let timed = actix_web::rt::time::timeout(self.limits.request_timeout, work);
        async move { timed.await.unwrap_or(Err(BookingError::TimedOut)) }
    }
}

#[cfg(test)]
mod tests {

    use crate::ids::UserKey;
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::Poll;

    use actix_web::test::TestRequest;

    use super::*;
    use crate::actors::event::{Book, GetSummary};
    use crate::actors::order_store::ForgetAnswers;
    use crate::booking::{BookOutcome, OrderUpdate};
    use crate::configuration::Settings;
    use crate::idempotency::{Begin, Idempotency};
    use crate::storage::Database;
    use crate::telemetry::StoreMetrics;

    /// A registry not yet recovered, whose one worker thread is the `Arbiter`
    /// returned; the directory holds its database.
    async fn new_registry(
        mailbox_capacity: usize,
        passivate_after: Option<Duration>,
    ) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let worker = Arbiter::new();
        let settings = Settings {
            database: dir.path().join("t.db").display().to_string(),
            ..Settings::default()
        };
        let database = Database::open(&settings).expect("the database opens");
        let feed = StatusFeed::new(0);
        let store =
            OrderStore::new(database.clone(), 64, 0, StoreMetrics::new(), feed.clone()).start();
        let threads = Arc::new(WorkerThreads::new(1));
        let (announced, done) = oneshot::channel();
        worker.spawn({
            let threads = threads.clone();
            async move {
                threads.announce_current();
                let _ = announced.send(());
            }
        });
        done.await.expect("the worker announced itself");
        let limits = Limits {
            mailbox_capacity,
            store_backlog: 1000,
            request_timeout: Duration::from_secs(10),
            passivate_after,
            hold_secs: 600,
        };
        (
            EventRegistry::new(store, database, threads, limits, feed).expect("reader threads"),
            worker,
            dir,
        )
    }

    /// As [`new_registry`], recovered from an empty database, never passivating.
    async fn empty_registry(
        mailbox_capacity: usize,
    ) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let (registry, worker, dir) = new_registry(mailbox_capacity, None).await;
        registry.recover().await;
        (registry, worker, dir)
    }

    /// As [`empty_registry`], with an event `gig`.
    async fn registry_with_event(
        mailbox_capacity: usize,
    ) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let (registry, worker, dir) = empty_registry(mailbox_capacity).await;
        let gig = EventId::parse("gig").unwrap();
        registry
            .initialize(gig, EventSettings::new(100), None)
            .await
            .unwrap();
        (registry, worker, dir)
    }

    /// Stops `worker`'s thread, as a long burst would, until the sender is
    /// dropped or sent to.
    async fn block(worker: &Arbiter) -> mpsc::Sender<()> {
        let (blocking, blocked) = oneshot::channel();
        let (release, held) = mpsc::channel::<()>();
        worker.spawn(async move {
            let _ = blocking.send(());
            let _ = held.recv();
        });
        blocked.await.unwrap();
        release
    }

    /// A booking admitted into the event's mailbox, waiting for its answer.
    type Admitted<'a> = Pin<Box<dyn Future<Output = Result<BookOutcome, BookingError>> + 'a>>;

    /// A booking of `user` through the routes' path, polled once: admitted,
    /// or refused at once.
    async fn book_once<'a>(
        registry: &'a EventRegistry,
        event: &'a EventId,
        user: &str,
    ) -> Result<Admitted<'a>, BookingError> {
        let mut booking: Admitted<'a> = Box::pin(book(registry, event, user));
        // The first poll sends the message, or is refused without waiting.
        match futures::poll!(&mut booking) {
            Poll::Pending => Ok(booking),
            Poll::Ready(Err(error)) => Err(error),
            Poll::Ready(Ok(outcome)) => panic!("answered at once: {outcome:?}"),
        }
    }

    /// A booking of `user` through the routes' path.
    fn book<'a>(
        registry: &'a EventRegistry,
        event: &'a EventId,
        user: &str,
    ) -> impl Future<Output = Result<BookOutcome, BookingError>> + 'a {
        let user: UserKey = user.into();
        registry.forward(event, |reply, slot| Book {
            user,
            reply,
            recorder: None,
            slot,
        })
    }

    #[actix_web::test]
    async fn a_new_event_is_reachable_only_once_its_mailbox_has_its_capacity() {
        let (registry, worker, _dir) = empty_registry(64).await;
        let gig = EventId::parse("gig").unwrap();
        // The event's thread is busy as the event is created: its actor cannot start yet.
        let release = block(&worker).await;
        let mut initialize =
            Box::pin(registry.initialize(gig.clone(), EventSettings::new(100), None));
        let waited =
            actix_web::rt::time::timeout(Duration::from_millis(100), &mut initialize).await;
        drop(release);
        assert!(waited.is_err(), "created before its actor started");
        initialize.await.unwrap();

        // Its mailbox holds 64, not actix's default of 16.
        assert!(registry.is_active(&gig));
        let release = block(&worker).await;
        let mut admitted = Vec::new();
        for n in 0..40 {
            admitted.push(book_once(&registry, &gig, &format!("u{n}")).await);
        }
        drop(release);
        let refused = admitted.iter().filter(|booking| booking.is_err()).count();
        assert_eq!(refused, 0, "refused as busy with 40 in a mailbox of 64");
        for booking in admitted {
            assert_eq!(booking.unwrap().await, Ok(BookOutcome::Booked));
        }
    }

    /// Stores event `gig` with `booked` users straight into the database.
    fn store_event(dir: &tempfile::TempDir, booked: usize) -> EventId {
        let settings = Settings {
            database: dir.path().join("t.db").display().to_string(),
            ..Settings::default()
        };
        let gig = EventId::parse("gig").unwrap();
        let mut changes = vec![Change::CreateEvent {
            event: gig.clone(),
            settings: EventSettings::new(100),
        }];
        changes.extend((0..booked).map(|n| Change::Order {
            event: gig.clone(),
            update: OrderUpdate::Booked(format!("stored{n}").into()),
        }));
        Database::open(&settings)
            .unwrap()
            .commit(&changes, [])
            .unwrap();
        gig
    }

    #[actix_web::test]
    async fn a_stored_event_is_activated_once_by_its_first_requests_with_its_mailbox_ready() {
        let (registry, worker, dir) = empty_registry(64).await;
        let gig = store_event(&dir, 3);
        assert!(!registry.is_active(&gig), "nothing is read at start");
        // The event's thread is busy as the first requests arrive: its actor cannot start yet.
        let release = block(&worker).await;
        let mut first = Vec::new();
        for n in 0..40 {
            first.push(Box::pin(book(&registry, &gig, &format!("u{n}"))));
        }
        let waited = actix_web::rt::time::timeout(
            Duration::from_millis(100),
            futures::future::select_all(first.iter_mut()),
        )
        .await;
        drop(release);
        assert!(waited.is_err(), "answered before the event's actor started");
        // One activation for all of them; none refused as busy by a mailbox of 16.
        let answers = futures::future::join_all(first).await;
        assert!(
            answers.iter().all(|a| *a == Ok(BookOutcome::Booked)),
            "{answers:?}"
        );
        let summary = registry.ask(&gig, GetSummary).await.unwrap();
        assert_eq!(
            summary.booked_tickets,
            3 + 40,
            "the stored ones and the new ones"
        );
        // An unknown event is not found, and leaves nothing behind.
        let unknown = EventId::parse("unknown").unwrap();
        assert_eq!(
            book(&registry, &unknown, "u").await,
            Err(BookingError::EventNotFound)
        );
        assert_eq!(registry.directory.slots.len(), 1);
    }

    #[actix_web::test]
    async fn an_idle_event_passivates_and_its_next_request_reads_what_it_decided() {
        let (registry, _worker, dir) = new_registry(64, Some(Duration::from_millis(40))).await;
        registry.recover().await;
        let gig = store_event(&dir, 0);
        assert_eq!(book(&registry, &gig, "a").await, Ok(BookOutcome::Booked));
        for _ in 0..500 {
            if registry.directory.slots.is_empty() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(registry.directory.slots.is_empty(), "never passivated");
        // Read again from the database: "a" holds a ticket.
        assert_eq!(
            book(&registry, &gig, "a").await,
            Err(BookingError::Refused(Refusal::AlreadyBooked))
        );
        let summary = registry.ask(&gig, GetSummary).await.unwrap();
        assert_eq!(summary.booked_tickets, 1);
    }

    #[actix_web::test]
    async fn bookings_racing_with_passivation_are_all_decided_once() {
        let (registry, _worker, dir) = new_registry(64, Some(Duration::from_millis(8))).await;
        registry.recover().await;
        let gig = store_event(&dir, 0);
        // Bursts with pauses about as long as the idle time: the actor
        // passivates between some of them, and now and then during one.
        let (mut booked, mut found_passive) = (0, 0);
        for round in 0..18 {
            if !registry.is_active(&gig) {
                found_passive += 1;
            }
            let burst = (0..5).map(|n| book(&registry, &gig, &format!("r{round}u{n}")));
            for answer in futures::future::join_all(burst).await {
                assert_eq!(answer, Ok(BookOutcome::Booked));
                booked += 1;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5 * (round % 8))).await;
        }
        let summary = registry.ask(&gig, GetSummary).await.unwrap();
        assert_eq!(summary.booked_tickets, booked);
        assert!(
            (1..18).contains(&found_passive),
            "{found_passive} of 18 bursts found the event passive or passivating"
        );
    }

    #[actix_web::test]
    async fn a_full_mailbox_refuses_at_once_and_the_refused_change_nothing() {
        const MAILBOX: usize = 4;
        let (registry, worker, _dir) = registry_with_event(MAILBOX).await;
        let gig = EventId::parse("gig").unwrap();
        // The event's thread stops, as behind a long burst: its mailbox fills.
        let release = block(&worker).await;
        let mut admitted = Vec::new();
        let mut refused = 0;
        for n in 0..64 {
            match book_once(&registry, &gig, &format!("u{n}")).await {
                Ok(booking) => admitted.push(booking),
                Err(BookingError::Busy) => refused += 1,
                Err(other) => panic!("neither admitted nor refused: {other:?}"),
            }
        }
        // Let the thread go before asserting: a failure must not leave it blocked.
        release.send(()).unwrap();
        assert!(
            (1..=MAILBOX + 1).contains(&admitted.len()),
            "{} admitted into a mailbox of {MAILBOX}",
            admitted.len(),
        );
        assert_eq!(refused, 64 - admitted.len());
        let answers = futures::future::join_all(admitted).await;
        assert!(
            answers.iter().all(|a| *a == Ok(BookOutcome::Booked)),
            "{answers:?}"
        );
        let summary = registry.ask(&gig, GetSummary).await.unwrap();
        assert_eq!(summary.booked_tickets as usize, answers.len());
        assert_eq!(summary.waiting, 0);
        // The places of the refused were given back: the next booking goes through.
        assert_eq!(book(&registry, &gig, "late").await, Ok(BookOutcome::Booked));
    }

    #[actix_web::test]
    async fn an_answer_expired_after_its_look_up_is_a_503_not_a_replay() {
        let (registry, _worker, _dir) = registry_with_event(16).await;
        let idempotency = Arc::new(Idempotency::new(Duration::from_secs(60), 0));
        let request = TestRequest::default()
            .uri("/api/book")
            .insert_header(("idempotency-key", "k"))
            .to_http_request();
        let Ok(Some(Begin::Execute(claim))) = idempotency.begin(&request, || b"{}".to_vec(), b"{}")
        else {
            panic!("a new key executes");
        };
        let answer = Answer {
            status: 409,
            body: "{}".into(),
        };
        registry
            .store_answer(claim.answer(answer.clone()))
            .await
            .unwrap();
        let Ok(Some(Begin::Replay { seq })) = idempotency.begin(&request, || b"{}".to_vec(), b"{}")
        else {
            panic!("a stored key replays");
        };
        assert_eq!(registry.stored_answer(seq).await, Ok(answer));

        // The row expires after the key was looked up in memory, before it is read.
        registry
            .store
            .send(ForgetAnswers {
                cutoff: i64::MAX,
                first_kept: 0,
            })
            .await
            .unwrap();
        // The store deletes it at its next moment without a commit to make.
        let mut read = registry.stored_answer(seq).await;
        for _ in 0..100 {
            if read.is_err() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            read = registry.stored_answer(seq).await;
        }
        assert_eq!(read, Err(BookingError::StorageUnavailable));
    }
}
