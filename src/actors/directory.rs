//! Where each event's actor is in its life: events are virtual actors. An
//! event has an actor only while it is in use: the first message for it
//! starts one from what the database holds for that event alone
//! (activation), and an actor idle for `passivate_after` stops (passivation).
//!
//! The [`Directory`] is the one place that knows which events are active,
//! and the order of both moves is what keeps one writer per event:
//!
//! - **Activation** happens once per event at a time: the first request puts
//!   a `Starting` slot in the map (an entry lock makes this atomic), and the
//!   others wait for its outcome. It asks the store to commit what is queued
//!   (`Activate`), so that the read that follows sees every change an earlier
//!   actor of the event decided, and only then reads the event.
//! - **Passivation** is decided by the idle actor itself
//!   ([`begin_passivation`](Directory::begin_passivation)): its slot becomes
//!   `Passivating`, so no message is sent to it any more (messages are sent
//!   under the map's lock, see `EventRegistry::forward`). It then handles
//!   what is already in its mailbox, sending those changes to the store, and
//!   stops; only then is its slot emptied
//!   ([`finish_passivation`](Directory::finish_passivation)) and may the
//!   event be activated again.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use super::event::{BookingError, EventActor, EventAddr, HandOff};
use super::order_store::{Activate, Compact, OrderStore, Release};
use super::readers::ReaderThreads;
use super::status_feed::StatusFeed;
use super::threads::WorkerThreads;
use crate::booking::EventState;
use crate::ids::EventId;
use crate::storage::Database;
use crate::telemetry;

/// What an activation (or a creation) came to: the actor, `None` if the
/// event is not stored, or why it could not be read.
pub(super) type Started = Result<Option<EventAddr>, BookingError>;

/// The outcome of a start, for every request waiting on it.
pub(super) type Starting = Shared<oneshot::Receiver<Started>>;

/// Resolves once a passivating actor has stopped.
pub(super) type Stopping = Shared<oneshot::Receiver<()>>;

/// An event's place in the directory; no slot: not active.
pub(super) enum Slot {
    /// Being read from the database, or created.
    Starting(Starting),
    Active(EventAddr),
    /// Idle and stopping: it handles what its mailbox holds, then stops.
    Passivating(Stopping),
}

/// Longest a request waits for another instance to hand an event over,
/// before it is refused with `Elsewhere` (503, `Retry-After: 1`): the
/// owner's `MIN_OWNERSHIP` and the passivation of its actor, with room.
const HANDOFF_WAIT: Duration = Duration::from_secs(2);

/// Threads that read events for their activation (see `readers`).
const READERS: usize = 4;

/// How often a request waiting for a hand-off asks the owner again.
const HANDOFF_ASK_AGAIN: Duration = Duration::from_millis(500);

/// How often a request waiting for a hand-off tries to take the event.
const HANDOFF_POLL: Duration = Duration::from_millis(20);

/// How long an instance that handed an event over lets the asking instance
/// take it (which tries every `HANDOFF_POLL`) before its own requests may
/// take it back: without it, an instance whose load keeps the event busy
/// takes it back the moment it let go, and the hand-off starves.
const HANDOFF_YIELD: Duration = Duration::from_millis(200);

/// Every event with an actor, and those on their way in or out. Shared by the
/// registry, the activations it spawns, and the actors (which take themselves
/// out when idle).
pub struct Directory {
    pub(super) slots: DashMap<EventId, Slot>,
    /// The threads that run event actors; an event's thread is chosen by a hash of its id.
    threads: Arc<WorkerThreads>,
    placement: RandomState,
    store: Addr<OrderStore>,
    /// Activations read through it, on a reader thread: a large event
    /// must not hold up the store's commits while it is read.
    database: Database,
    /// Where events are read.
    readers: ReaderThreads,
    /// Messages an actor's mailbox holds before requests are refused.
    mailbox_capacity: usize,
    /// An actor idle this long stops; `None`: never.
    passivate_after: Option<Duration>,
    /// A hold's duration in seconds when neither its request nor its event names one.
    hold_secs: u32,
    /// Passivations since freed memory was last handed back to the system.
    passivated_since_trim: AtomicUsize,
    /// Events just handed to another instance, and until when this one
    /// leaves them to it (`HANDOFF_YIELD`).
    yielded: DashMap<EventId, Instant>,
    /// Given to each actor: it publishes the standings of watched users.
    feed: Arc<StatusFeed>,
}

impl Directory {
    pub(super) fn new(
        store: Addr<OrderStore>,
        database: Database,
        threads: Arc<WorkerThreads>,
        mailbox_capacity: usize,
        passivate_after: Option<Duration>,
        hold_secs: u32,
        feed: Arc<StatusFeed>,
    ) -> std::io::Result<Self> {
        let readers = ReaderThreads::start(READERS)?;
        Ok(Directory {
            slots: DashMap::new(),
            threads,
            placement: RandomState::new(),
            store,
            database,
            readers,
            mailbox_capacity,
            passivate_after,
            hold_secs,
            passivated_since_trim: AtomicUsize::new(0),
            yielded: DashMap::new(),
            feed,
        })
    }

    /// After passivations, hands the allocator's free memory back to the
    /// system. glibc keeps what the stopped actors freed in the arenas of the
    /// threads they ran on, so without this the process would hold, for
    /// good, the memory of the most events ever active at once. And once no
    /// event is active, SQLite's page caches are emptied too: they hold pages
    /// of events no longer in memory. Also forgets the hand-overs whose
    /// `HANDOFF_YIELD` is over.
    pub(super) fn give_back_memory(&self) {
        let now = Instant::now();
        self.yielded.retain(|_, until| *until > now);
        if self.passivated_since_trim.swap(0, Ordering::Relaxed) > 0 {
            // Once no event is in memory, neither are the pages it was read from.
            if self.slots.is_empty() {
                self.database.release_memory();
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free pages of the allocator's
            // own heaps to the system; it takes the allocator's locks itself.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Starts activating `id`, unless it is already on its way in or out;
    /// returns the slot to wait on. Called when a request found no slot.
    pub(super) fn activate(self: &Arc<Self>, id: &EventId) -> Waiting {
        self.activate_as(id, Takeover::AskOwner)
    }

    /// As [`activate`](Self::activate), but only if no instance owns the
    /// event: an owner elsewhere is left alone, not asked to hand it over.
    pub(super) fn activate_if_free(self: &Arc<Self>, id: &EventId) -> Waiting {
        self.activate_as(id, Takeover::IfFree)
    }

    fn activate_as(self: &Arc<Self>, id: &EventId, takeover: Takeover) -> Waiting {
        let (started, starting) = oneshot::channel();
        match self.slots.entry(id.clone()) {
            dashmap::Entry::Occupied(slot) => Waiting::of(slot.get()),
            dashmap::Entry::Vacant(slot) => {
                let starting = starting.shared();
                slot.insert(Slot::Starting(starting.clone()));
                let directory = self.clone();
                let id = id.clone();
                // A task of its own: a client hanging up must not leave the slot `Starting`.
                actix_web::rt::spawn(async move {
                    let outcome = directory.read_and_start(&id, takeover).await;
                    let _ = started.send(outcome);
                });
                Waiting::Start(starting)
            }
        }
    }

    /// Reads the event and starts its actor; empties the slot if there is no
    /// event, or no reading it.
    async fn read_and_start(self: &Arc<Self>, id: &EventId, takeover: Takeover) -> Started {
        match self.read(id, takeover).await {
            Ok((session, Some(state))) => {
                let actor = self.start_actor(id.clone(), state, session).await;
                self.slots.insert(id.clone(), Slot::Active(actor.clone()));
                telemetry::event_activated();
                Ok(Some(actor))
            }
            outcome => {
                self.slots.remove(id);
                self.release(id);
                outcome.map(|_| None)
            }
        }
    }

    /// The event as stored, once every change queued for the store is
    /// committed, and the writer's session under which this instance owns
    /// it; its log's superseded rows go to the store to be deleted.
    pub(super) async fn read(
        &self,
        id: &EventId,
        takeover: Takeover,
    ) -> Result<(u64, Option<EventState>), BookingError> {
        let session = self.own(id, takeover).await?;
        let (database, event) = (self.database.clone(), id.clone());
        let read = self.readers.run(move || database.load_event(&event)).await;
        match read {
            Some(Ok(Some((state, superseded)))) => {
                if !superseded.is_empty() {
                    self.store.do_send(Compact { rows: superseded });
                }
                Ok((session, Some(state)))
            }
            Some(Ok(None)) => Ok((session, None)),
            Some(Err(error)) => {
                log::error!("activating event {id} failed: {error}");
                Err(BookingError::StorageUnavailable)
            }
            None => Err(BookingError::Stopped),
        }
    }

    /// Takes the event's ownership (see `Activate`), once the time it
    /// leaves an event it just handed over to the other instance is up.
    /// Where another instance owns it, asks that one to hand it over (every
    /// `HANDOFF_ASK_AGAIN`), and tries again every `HANDOFF_POLL` for up to
    /// `HANDOFF_WAIT`; or, with `Takeover::IfFree`, gives up at once.
    async fn own(&self, id: &EventId, takeover: Takeover) -> Result<u64, BookingError> {
        if takeover == Takeover::IfFree {
            if self.yielded.contains_key(id) {
                return Err(BookingError::Elsewhere);
            }
            let owned = self.store.send(Activate { event: id.clone() }).await;
            return owned.map_err(|_| BookingError::Stopped)?;
        }
        // Read again after each wait: the release may have moved the time on.
        while let Some(until) = self.yielded.get(id).map(|until| *until) {
            let now = Instant::now();
            if until <= now {
                break;
            }
            actix_web::rt::time::sleep(until - now).await;
        }
        self.yielded.remove(id);
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut ask_at = Instant::now();
        loop {
            let owned = self.store.send(Activate { event: id.clone() }).await;
            match owned.map_err(|_| BookingError::Stopped)? {
                Err(BookingError::Elsewhere) if Instant::now() < deadline => {}
                outcome => return outcome,
            }
            // Again now and then: the owner may not have been active to hear
            // the last request (still starting), or took the event back since.
            if Instant::now() >= ask_at {
                ask_at = Instant::now() + HANDOFF_ASK_AGAIN;
                let (database, event) = (self.database.clone(), id.clone());
                let asking = move || database.request_handoff(&event);
                if let Ok(Err(error)) = actix_web::rt::task::spawn_blocking(asking).await {
                    log::warn!("could not ask for event {id}: {error}");
                }
            }
            actix_web::rt::time::sleep(HANDOFF_POLL).await;
        }
    }

    /// Another instance asks for the event: its actor, if active here, hands it over.
    pub(super) fn hand_off(&self, id: &EventId) {
        if let Some(slot) = self.slots.get(id) {
            if let Slot::Active(actor) = slot.value() {
                actor.do_send(HandOff);
            }
        }
    }

    /// The event's actor stopped to hand it over: gives the event up (see
    /// `release`) and leaves it to the asking instance until `HANDOFF_YIELD`
    /// after the store released it, however long the store took (at most
    /// `HANDOFF_WAIT`, should the store never answer).
    pub(super) fn hand_over(self: &Arc<Self>, id: &EventId) {
        self.yielded
            .insert(id.clone(), Instant::now() + HANDOFF_WAIT);
        let (directory, id) = (self.clone(), id.clone());
        actix_web::rt::spawn(async move {
            let released = directory.store.send(Release { event: id.clone() }).await;
            if released.is_ok() {
                directory.yielded.insert(id, Instant::now() + HANDOFF_YIELD);
            }
        });
    }

    /// How long an idle actor waits before it stops; `None`: never.
    pub(super) fn passivate_after(&self) -> Option<Duration> {
        self.passivate_after
    }

    /// A hold's duration in seconds when neither its request nor its event names one.
    pub(super) fn hold_secs(&self) -> u32 {
        self.hold_secs
    }

    /// Where actors publish the standings of watched users.
    pub(super) fn feed(&self) -> Arc<StatusFeed> {
        self.feed.clone()
    }

    /// The database events are read from.
    pub(super) fn database(&self) -> Database {
        self.database.clone()
    }

    /// Gives up the event's ownership once its changes queued so far are
    /// committed: its actor stopped, or it got none.
    pub(super) fn release(&self, id: &EventId) {
        self.store.do_send(Release { event: id.clone() });
    }

    /// Starts the event's actor on its thread, and returns once it runs.
    /// Requests may reach it only then: its mailbox then has its capacity,
    /// which `try_send` checks. Until then it has actix's default of 16, and
    /// a burst just after a start would be refused as busy.
    pub(super) async fn start_actor(
        self: &Arc<Self>,
        id: EventId,
        state: EventState,
        session: u64,
    ) -> EventAddr {
        let thread = self.threads.pick(self.placement.hash_one(&id));
        let capacity = self.mailbox_capacity;
        let (store, directory) = (self.store.clone(), self.clone());
        let (started, on_start) = oneshot::channel();
        let actor = EventActor::start_in_arbiter(&thread, move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            // The very address the actor compares with its slot's when it passivates.
            let me = Arc::new(ctx.address());
            let _ = started.send(me.clone());
            EventActor::new(id, state, session, store, me, directory)
        });
        on_start.await.unwrap_or_else(|_| Arc::new(actor))
    }

    /// Called by an idle actor: its slot becomes `Passivating`, so that no
    /// message is sent to it any more. `None` if the slot is not its own.
    pub(super) fn begin_passivation(
        &self,
        id: &EventId,
        me: &EventAddr,
    ) -> Option<oneshot::Sender<()>> {
        let mut slot = self.slots.get_mut(id)?;
        match slot.value() {
            Slot::Active(actor) if Arc::ptr_eq(actor, me) => {}
            _ => return None,
        }
        let (stopped, stopping) = oneshot::channel();
        *slot = Slot::Passivating(stopping.shared());
        Some(stopped)
    }

    /// Called by a passivating actor once it handled its mailbox and
    /// stopped: the event may be activated again.
    pub(super) fn finish_passivation(&self, id: &EventId, stopped: oneshot::Sender<()>) {
        self.slots
            .remove_if(id, |_, slot| matches!(slot, Slot::Passivating(_)));
        if self.slots.len() * 4 < self.slots.capacity() {
            // The map does not shrink by itself: after a burst of many events it would keep their room.
            self.slots.shrink_to_fit();
        }
        let _ = stopped.send(());
        self.passivated_since_trim.fetch_add(1, Ordering::Relaxed);
        telemetry::event_passivated();
    }
}

/// How an activation takes an event that another instance may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Takeover {
    /// A request needs it: the owner is asked to hand it over.
    AskOwner,
    /// Only if no instance owns it (an owner that died left it).
    IfFree,
}

/// What a request for an event that is not active waits for.
pub(super) enum Waiting {
    Start(Starting),
    Stop(Stopping),
    /// It became active meanwhile: look again.
    Nothing,
}

impl Waiting {
    fn of(slot: &Slot) -> Self {
        match slot {
            Slot::Starting(starting) => Waiting::Start(starting.clone()),
            Slot::Passivating(stopping) => Waiting::Stop(stopping.clone()),
            Slot::Active(_) => Waiting::Nothing,
        }
    }

    /// Waits; `Err` when the wait ends the request (no such event, or it
    /// cannot be read), `Ok` when it is worth looking again.
    pub(super) async fn over(self) -> Result<(), BookingError> {
        match self {
            Waiting::Start(starting) => match starting.await {
                Ok(Ok(Some(_))) => Ok(()),
                Ok(Ok(None)) => Err(BookingError::EventNotFound),
                Ok(Err(error)) => Err(error),
                Err(oneshot::Canceled) => Err(BookingError::Stopped),
            },
            Waiting::Stop(stopping) => {
                let _ = stopping.await;
                Ok(())
            }
            Waiting::Nothing => Ok(()),
        }
    }
}

impl Slot {
    /// What a request that found this slot waits for, if it is not active.
    pub(super) fn waiting(&self) -> Waiting {
        Waiting::of(self)
    }
}
