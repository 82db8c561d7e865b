//! Finds an event's actor by its id, and creates events.

use std::hash::{BuildHasher, RandomState};

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::channel::oneshot;

use super::event::{EventActor, Recorder};
use super::order_store::{NotStored, OrderStore, Persist};
use crate::booking::EventState;
use crate::idempotency::Pending;
use crate::ids::EventId;
use crate::storage::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitializeError {
    AlreadyInitialized,
    StorageUnavailable,
}

enum Slot {
    /// Its creation is being committed: taken for a second initialize, not
    /// yet there for bookings (it is not acknowledged).
    Initializing,
    Ready(Addr<EventActor>),
}

/// Every event's actor, by id. A sharded map: looking up one event never
/// waits for another, and actors are only added, never removed.
pub struct EventRegistry {
    events: DashMap<EventId, Slot>,
    /// The threads that run event actors; an event's thread is chosen by a hash of its id.
    arbiters: Vec<ArbiterHandle>,
    placement: RandomState,
    store: Addr<OrderStore>,
}

impl EventRegistry {
    /// Starts an actor for each recovered event.
    pub fn new(
        store: Addr<OrderStore>,
        arbiters: Vec<ArbiterHandle>,
        recovered: Vec<(EventId, EventState)>,
    ) -> Self {
        assert!(
            !arbiters.is_empty(),
            "event actors need at least one thread"
        );
        let registry = EventRegistry {
            events: DashMap::new(),
            arbiters,
            placement: RandomState::new(),
            store,
        };
        for (id, state) in recovered {
            let actor = registry.start_actor(id.clone(), state);
            registry.events.insert(id, Slot::Ready(actor));
        }
        registry
    }

    /// The actor of an initialized event.
    pub fn get(&self, id: &EventId) -> Option<Addr<EventActor>> {
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
        recorder: Option<Recorder<(), InitializeError>>,
    ) -> Result<(), InitializeError> {
        let taken = match self.events.entry(id.clone()) {
            Entry::Occupied(_) => true,
            Entry::Vacant(slot) => {
                slot.insert(Slot::Initializing);
                false
            }
        };
        if taken {
            let refused = Err(InitializeError::AlreadyInitialized);
            let Some(record) = recorder else {
                return refused;
            };
            return match self
                .store_answer(record(refused.as_ref().map_err(|e| *e)))
                .await
            {
                Ok(()) => refused,
                Err(NotStored) => Err(InitializeError::StorageUnavailable),
            };
        }
        let change = Change::CreateEvent {
            event: id.clone(),
            total_tickets,
        };
        let answer = recorder.map(|record| record(Ok(&())));
        match self.persist(Some(change), answer).await {
            Ok(()) => {
                let actor = self.start_actor(id.clone(), EventState::new(total_tickets));
                self.events.insert(id, Slot::Ready(actor));
                Ok(())
            }
            Err(NotStored) => {
                self.events.remove(&id);
                Err(InitializeError::StorageUnavailable)
            }
        }
    }

    /// Stores the answer of an idempotent request that changed nothing and
    /// reached no event actor (an unknown event, say).
    pub async fn store_answer(&self, answer: Pending) -> Result<(), NotStored> {
        self.persist(None, Some(answer)).await
    }

    async fn persist(
        &self,
        change: Option<Change>,
        answer: Option<Pending>,
    ) -> Result<(), NotStored> {
        let (done, committed) = oneshot::channel();
        let done = Box::new(move |stored| {
            let _ = done.send(stored);
        });
        self.store.do_send(Persist {
            change,
            answer,
            origin: None,
            done,
        });
        committed.await.unwrap_or(Err(NotStored))
    }

    fn start_actor(&self, id: EventId, state: EventState) -> Addr<EventActor> {
        let arbiter = &self.arbiters[self.placement.hash_one(&id) as usize % self.arbiters.len()];
        let store = self.store.clone();
        EventActor::start_in_arbiter(arbiter, move |_| EventActor::new(id, state, store))
    }
}
