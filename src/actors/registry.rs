//! Finds an event's actor by its id, and creates events.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::channel::oneshot;

use super::event::{BookingError, EventActor, EventAddr, Recorder, Reply};
use super::gate::Gate;
use super::order_store::{Backlog, LoadAnswer, NotStored, OrderStore, Persist, QueueSlot};
use super::threads::WorkerThreads;
use crate::booking::{EventState, Refusal};
use crate::idempotency::{Answer, Pending};
use crate::ids::EventId;
use crate::storage::Change;
use crate::telemetry;

/// The limits of the booking path, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages an event actor's mailbox holds before requests are refused.
    pub mailbox_capacity: usize,
    /// Changes waiting for the store before requests are refused.
    pub store_backlog: usize,
    /// Longest wait for an actor's answer before the request gets 503.
    pub request_timeout: Duration,
}

enum Slot {
    /// Its creation is being committed: taken for a second initialize, not
    /// yet there for bookings (it is not acknowledged).
    Initializing,
    Ready(EventAddr),
}

/// Every event's actor, by id. A sharded map: looking up one event never
/// waits for another, and actors are only added, never removed.
///
/// It starts empty, while the server already answers probes, and is filled
/// once by [`recover`](Self::recover). Requests for events must wait for
/// that ([`recovered`](Self::recovered)): before it, a known event would look
/// unknown, and could even be initialized a second time.
pub struct EventRegistry {
    events: DashMap<EventId, Slot>,
    /// Opened once every stored event has its actor; requests wait for it.
    recovered: Gate,
    /// The threads that run event actors; an event's thread is chosen by a hash of its id.
    threads: Arc<WorkerThreads>,
    placement: RandomState,
    store: Addr<OrderStore>,
    /// The bound on the store's queue: book and cancel requests take a place here.
    backlog: Arc<Backlog>,
    limits: Limits,
}

impl EventRegistry {
    /// An empty registry, not yet recovered, whose actors run on `threads`.
    pub fn new(store: Addr<OrderStore>, threads: Arc<WorkerThreads>, limits: Limits) -> Self {
        EventRegistry {
            events: DashMap::new(),
            recovered: Gate::default(),
            threads,
            placement: RandomState::new(),
            store,
            backlog: Backlog::new(limits.store_backlog),
            limits,
        }
    }

    /// Starts an actor for each event read from the database, once every
    /// thread to place them on has started, then lets the waiting requests in.
    pub async fn recover(&self, events: Vec<(EventId, EventState)>) {
        self.threads.all_started().await;
        let mut starting = Vec::with_capacity(events.len());
        for (id, state) in events {
            let (actor, started) = self.start_actor(id.clone(), state);
            self.events.insert(id, Slot::Ready(actor));
            starting.push(started);
        }
        futures::future::join_all(starting).await;
        self.recovered.open();
    }

    /// Whether every stored event has its actor.
    pub fn is_recovered(&self) -> bool {
        self.recovered.is_open()
    }

    /// Waits until recovery is over, at most the request time-out.
    pub async fn recovered(&self) -> Result<(), BookingError> {
        actix_web::rt::time::timeout(self.limits.request_timeout, self.recovered.opened())
            .await
            .map_err(|_| BookingError::Recovering)
    }

    /// The actor of an initialized event.
    pub fn get(&self, id: &EventId) -> Option<EventAddr> {
        match self.events.get(id)?.value() {
            Slot::Ready(actor) => Some(actor.clone()),
            Slot::Initializing => None,
        }
    }

    /// Creates the event, answering once it is committed (with the answer of
    /// an idempotent request, if `recorder` renders one). Run it as a task of
    /// its own: a client hanging up must not leave the slot `Initializing`.
    pub async fn initialize(
        &self,
        id: EventId,
        total_tickets: u32,
        recorder: Option<Recorder<(), Refusal>>,
    ) -> Result<(), BookingError> {
        let taken = match self.events.entry(id.clone()) {
            Entry::Occupied(_) => true,
            Entry::Vacant(slot) => {
                slot.insert(Slot::Initializing);
                false
            }
        };
        if taken {
            let refusal = Refusal::AlreadyInitialized;
            if let Some(record) = recorder {
                self.store_answer(record(Err(refusal))).await?;
            }
            return Err(BookingError::Refused(refusal));
        }
        let change = Change::CreateEvent {
            event: id.clone(),
            total_tickets,
        };
        let answer = recorder.map(|record| record(Ok(&())));
        let persisted = self.persist(Some(change), answer).await;
        match persisted {
            Ok(()) => {
                let (actor, started) = self.start_actor(id.clone(), EventState::new(total_tickets));
                let _ = started.await;
                self.events.insert(id, Slot::Ready(actor));
            }
            Err(_) => {
                self.events.remove(&id);
            }
        }
        persisted
    }

    /// Stores the answer of an idempotent request that changed nothing and
    /// reached no event actor (an unknown event, say).
    pub async fn store_answer(&self, answer: Pending) -> Result<(), BookingError> {
        self.persist(None, Some(answer)).await
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

    async fn persist(
        &self,
        change: Option<Change>,
        answer: Option<Pending>,
    ) -> Result<(), BookingError> {
        let slot = self.backlog.reserve().ok_or(BookingError::Busy)?;
        let (done, committed) = oneshot::channel();
        let done = Box::new(move |stored| {
            let _ = done.send(stored);
        });
        self.store.do_send(Persist {
            change,
            answer,
            origin: None,
            done,
            slot,
        });
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(NotStored)) => Err(BookingError::StorageUnavailable),
            Err(oneshot::Canceled) => Err(BookingError::Stopped),
        }
    }

    /// Admits a book or cancel (a place in the store's queue), sends it to
    /// `actor` and waits for its answer, which comes once the change is
    /// committed (or at once if it is refused). A full store queue or mailbox
    /// refuses at once; a slow answer times out.
    pub async fn forward<M, T>(
        &self,
        actor: &Addr<EventActor>,
        message: impl FnOnce(Reply<T>, QueueSlot) -> M,
    ) -> Result<T, BookingError>
    where
        M: Message<Result = ()> + Send + 'static,
        EventActor: Handler<M>,
    {
        let slot = self.backlog.reserve().ok_or(BookingError::Busy)?;
        let (reply, replied) = oneshot::channel();
        match actor.try_send(message(reply, slot)) {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                telemetry::queue_full("event");
                return Err(BookingError::Busy);
            }
            Err(SendError::Closed(_)) => return Err(BookingError::Stopped),
        }
        self.within(async { replied.await.unwrap_or(Err(BookingError::Stopped)) })
            .await
    }

    /// Asks `actor` a question (a read) and waits at most the time-out.
    pub async fn ask<M, T>(&self, actor: &Addr<EventActor>, message: M) -> Result<T, BookingError>
    where
        M: Message<Result = Result<T, BookingError>> + Send + 'static,
        M::Result: Send,
        EventActor: Handler<M>,
    {
        match actor
            .send(message)
            .timeout(self.limits.request_timeout)
            .await
        {
            Ok(answer) => answer,
            Err(MailboxError::Timeout) => Err(BookingError::TimedOut),
            Err(MailboxError::Closed) => Err(BookingError::Stopped),
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

    /// Starts the event's actor on its thread. Requests may reach it once
    /// the receiver answers: its mailbox then has its capacity, which routes'
    /// `try_send` checks. Until then it has actix's default of 16, and a
    /// burst just after a start would be refused as busy.
    fn start_actor(&self, id: EventId, state: EventState) -> (EventAddr, oneshot::Receiver<()>) {
        let thread = self.threads.pick(self.placement.hash_one(&id));
        let store = self.store.clone();
        let capacity = self.limits.mailbox_capacity;
        let (started, on_start) = oneshot::channel();
        let actor = EventActor::start_in_arbiter(&thread, move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            let _ = started.send(());
            EventActor::new(id, state, store, Arc::new(ctx.address()))
        });
        (Arc::new(actor), on_start)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::Poll;

    use actix_web::test::TestRequest;

    use super::*;
    use crate::actors::event::{Book, GetSummary};
    use crate::actors::order_store::ForgetAnswers;
    use crate::booking::BookOutcome;
    use crate::configuration::Settings;
    use crate::idempotency::{Begin, Idempotency};
    use crate::storage::Database;
    use crate::telemetry::StoreMetrics;

    /// A registry not yet recovered, whose one worker thread is the `Arbiter`
    /// returned; the directory holds its database.
    async fn new_registry(mailbox_capacity: usize) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let worker = Arbiter::new();
        let settings = Settings {
            database: dir.path().join("t.db").display().to_string(),
            ..Settings::default()
        };
        let database = Database::open(&settings).expect("the database opens");
        let store = OrderStore::new(database, 64, 0, StoreMetrics::new()).start();
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
        };
        (EventRegistry::new(store, threads, limits), worker, dir)
    }

    /// As [`new_registry`], recovered from an empty database.
    async fn empty_registry(
        mailbox_capacity: usize,
    ) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let (registry, worker, dir) = new_registry(mailbox_capacity).await;
        registry.recover(Vec::new()).await;
        (registry, worker, dir)
    }

    /// As [`empty_registry`], with an event `gig`.
    async fn registry_with_event(
        mailbox_capacity: usize,
    ) -> (EventRegistry, Arbiter, tempfile::TempDir) {
        let (registry, worker, dir) = empty_registry(mailbox_capacity).await;
        let gig = EventId::parse("gig").unwrap();
        registry.initialize(gig, 100, None).await.unwrap();
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
        actor: &'a EventAddr,
        user: &str,
    ) -> Result<Admitted<'a>, BookingError> {
        let user: Arc<str> = user.into();
        let mut booking: Admitted<'a> = Box::pin(registry.forward(actor, |reply, slot| Book {
            user,
            reply,
            recorder: None,
            slot,
        }));
        // The first poll sends the message, or is refused without waiting.
        match futures::poll!(&mut booking) {
            Poll::Pending => Ok(booking),
            Poll::Ready(Err(error)) => Err(error),
            Poll::Ready(Ok(outcome)) => panic!("answered at once: {outcome:?}"),
        }
    }

    #[actix_web::test]
    async fn a_new_event_is_reachable_only_once_its_mailbox_has_its_capacity() {
        let (registry, worker, _dir) = empty_registry(64).await;
        let gig = EventId::parse("gig").unwrap();
        // The event's thread is busy as the event is created: its actor cannot start yet.
        let release = block(&worker).await;
        let mut initialize = Box::pin(registry.initialize(gig.clone(), 100, None));
        let waited =
            actix_web::rt::time::timeout(Duration::from_millis(100), &mut initialize).await;
        drop(release);
        assert!(waited.is_err(), "created before its actor started");
        initialize.await.unwrap();

        // Its mailbox holds 64, not actix's default of 16.
        let actor = registry.get(&gig).expect("created");
        let release = block(&worker).await;
        let mut admitted = Vec::new();
        for n in 0..40 {
            admitted.push(book_once(&registry, &actor, &format!("u{n}")).await);
        }
        drop(release);
        let refused = admitted.iter().filter(|booking| booking.is_err()).count();
        assert_eq!(refused, 0, "refused as busy with 40 in a mailbox of 64");
        for booking in admitted {
            assert_eq!(booking.unwrap().await, Ok(BookOutcome::Booked));
        }
    }

    #[actix_web::test]
    async fn recovery_lets_requests_in_only_once_every_mailbox_has_its_capacity() {
        let (registry, worker, _dir) = new_registry(64).await;
        let gig = EventId::parse("gig").unwrap();
        let release = block(&worker).await;
        let mut recover = Box::pin(registry.recover(vec![(gig.clone(), EventState::new(100))]));
        let waited = actix_web::rt::time::timeout(Duration::from_millis(100), &mut recover).await;
        drop(release);
        assert!(
            waited.is_err(),
            "recovered before the event's actor started"
        );
        recover.await;
        assert!(registry.is_recovered());
    }

    #[actix_web::test]
    async fn a_full_mailbox_refuses_at_once_and_the_refused_change_nothing() {
        const MAILBOX: usize = 4;
        let (registry, worker, _dir) = registry_with_event(MAILBOX).await;
        let actor = registry.get(&EventId::parse("gig").unwrap()).unwrap();
        // The event's thread stops, as behind a long burst: its mailbox fills.
        let release = block(&worker).await;
        let mut admitted = Vec::new();
        let mut refused = 0;
        for n in 0..64 {
            match book_once(&registry, &actor, &format!("u{n}")).await {
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
        let summary = registry.ask(&actor, GetSummary).await.unwrap();
        assert_eq!(summary.booked_tickets as usize, answers.len());
        assert_eq!(summary.waiting, 0);
        // The places of the refused were given back: the next booking goes through.
        let user: Arc<str> = "late".into();
        let late = registry
            .forward(&actor, |reply, slot| Book {
                user,
                reply,
                recorder: None,
                slot,
            })
            .await;
        assert_eq!(late, Ok(BookOutcome::Booked));
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
