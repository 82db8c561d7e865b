//! Idempotent retries: a POST with an `Idempotency-Key` header is executed
//! once; its final answer is stored in the same SQLite transaction as the
//! change it made, and a retry with the same key and request (route and
//! normalized fields: see `routes::extract::Canonical`) gets that answer
//! again, byte for byte.
//!
//! Keys live in memory (loaded from SQLite on start), so that a request is
//! told at once whether it is new, a retry, or a clash; a retry's answer is
//! then read back from its row. A key is kept for the whole retention period,
//! so memory holds only digests and the row's number (its cost per key is in
//! docs/performance.md), never the answer itself.
//!
//! Keys are kept for `retention_secs`, and at most `max_keys` of them: over
//! the cap, the oldest answers are forgotten early (see
//! [`Idempotency::evict_over_cap`]), so memory stays bounded however many
//! keyed requests arrive within the retention period.
//!
//! A key is *in flight* from the first request until its answer is
//! committed; the [`KeyClaim`] that marks it frees the key again if the answer
//! is never stored (a 5xx, or a request dropped on the way), so the client
//! can retry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, AUTHORIZATION};
use actix_web::{web, HttpRequest};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::telemetry;

/// A name made once: looking a header up by a `&str` builds (and allocates) its name each time.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const MAX_KEY_LEN: usize = 255;

/// Who chose a key: a digest of the caller's API key ("" when the API is open), and the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyId {
    pub scope: String,
    pub key: String,
}

impl KeyId {
    /// What memory keeps of the id: 16 bytes of SHA-256 over scope and key.
    /// Two ids meet on the same digest with odds of about 2^-128 per pair.
    fn digest(&self) -> KeyDigest {
        let digest = Sha256::new()
            .chain_update(&self.scope)
            .chain_update(b"\n")
            .chain_update(&self.key)
            .finalize();
        let mut short = [0; 16];
        short.copy_from_slice(&digest[..16]);
        short
    }
}

type KeyDigest = [u8; 16];

/// A final answer as it went out: status and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: web::Bytes,
}

/// Digest of a request (route and canonical body): a retry must match it.
pub type Fingerprint = [u8; 32];

/// SHA-256 of the route and a body. The route is its pattern
/// (`/api/events/{eventId}/bookings/{userId}`), so that ids in the path are
/// fingerprinted in their canonical form, in the body; for the old routes
/// the pattern is the path.
fn fingerprint(req: &HttpRequest, body: &[u8]) -> Fingerprint {
    let route = req.match_pattern();
    Sha256::new()
        .chain_update(route.as_deref().unwrap_or(req.path()))
        .chain_update(b"\n")
        .chain_update(body)
        .finalize()
        .into()
}

/// One answer, as written to SQLite.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub id: KeyId,
    pub fingerprint: Fingerprint,
    pub answer: Answer,
    /// Unix seconds; the answer is kept for the retention period from then.
    pub stored_at: i64,
}

/// A key whose answer is stored, as recovery reads it (without the answer).
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: KeyId,
    pub fingerprint: Fingerprint,
    /// The answer's row in table `idempotency`.
    pub seq: i64,
    pub stored_at: i64,
}

/// Where a key stands.
enum KeyState {
    InFlight {
        fingerprint: Fingerprint,
    },
    Done {
        fingerprint: Fingerprint,
        /// The answer's row, read back to replay it.
        seq: i64,
        stored_at: i64,
    },
}

/// What to do with a request that carries a key.
pub enum Begin {
    /// First time: execute it, and store its answer with the claim.
    Execute(KeyClaim),
    /// Seen before: send again the answer stored in row `seq`.
    Replay { seq: i64 },
}

/// Shards of the map of keys. A pass over every key (the cap, every second
/// while over it; the expiry, every minute) locks one shard at a time, and a
/// request whose key falls in it waits. With a million keys, dashmap's
/// default of 8 shards made that wait long enough to show in a keyed drop's
/// tail (docs/performance.md); with 256 each pass is short.
const SHARDS: usize = 256;

/// Every key seen within the retention period.
pub struct Idempotency {
    entries: DashMap<KeyDigest, KeyState>,
    retention: Duration,
    /// Most keys kept (0: no cap). Keys stay in memory for the whole
    /// retention period, so without a cap a storm of keyed requests could
    /// fill it long before the first one expires.
    max_keys: usize,
    /// Answers in rows before this one were stored with a fingerprint of
    /// the body as it was sent, before fingerprints were taken over the
    /// canonical request (schema version 4): a retry of one is matched
    /// that way, so that it replays across the upgrade. Set by `restore`.
    raw_fingerprints_before: AtomicI64,
}

impl Idempotency {
    /// Empty until [`restore`](Self::restore) adds the answers recovered from SQLite.
    pub fn new(retention: Duration, max_keys: usize) -> Self {
        Idempotency {
            entries: DashMap::with_shard_amount(SHARDS),
            retention,
            max_keys,
            raw_fingerprints_before: AtomicI64::new(0),
        }
    }

    /// Keys kept: in flight or answered.
    pub fn keys_kept(&self) -> usize {
        self.entries.len()
    }

    /// Adds the keys whose answers were stored before the restart: retries
    /// of them replay. Those in rows before `raw_fingerprints_before` hold a
    /// fingerprint of the body as sent (see the field of that name).
    pub fn restore(&self, recovered: Vec<StoredKey>, raw_fingerprints_before: i64) {
        self.raw_fingerprints_before
            .store(raw_fingerprints_before, Ordering::Relaxed);
        for StoredKey {
            id,
            fingerprint,
            seq,
            stored_at,
        } in recovered
        {
            self.entries.insert(
                id.digest(),
                KeyState::Done {
                    fingerprint,
                    seq,
                    stored_at,
                },
            );
        }
    }

    /// For a request with an `Idempotency-Key`: execute it, replay its
    /// answer, or refuse (422 for a different request, 409 while in flight).
    /// `None` when the request has no key. A request is the route and its
    /// `canonical` body (see `routes::extract::Canonical`); `sent`, the body
    /// as it came, only matters for answers stored before that.
    pub fn begin(
        self: &Arc<Self>,
        req: &HttpRequest,
        canonical: impl FnOnce() -> Vec<u8>,
        sent: &[u8],
    ) -> Result<Option<Begin>, ApiError> {
        let Some(header) = req.headers().get(HEADER) else {
            return Ok(None);
        };
        let key = header.as_bytes();
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(ApiError::InvalidInput(format!(
                "Idempotency-Key must be 1-{MAX_KEY_LEN} printable ASCII characters"
            )));
        }
        let id = KeyId {
            scope: scope_of(req),
            key: String::from_utf8_lossy(key).into_owned(),
        };
        let fingerprint = fingerprint(req, &canonical());
        let raw_before = self.raw_fingerprints_before.load(Ordering::Relaxed);
        let digest = id.digest();
        match self.entries.entry(digest) {
            Entry::Occupied(mut entry) => match entry.get() {
                KeyState::Done { stored_at, .. } if *stored_at < self.cutoff() => {
                    entry.insert(KeyState::InFlight { fingerprint });
                }
                KeyState::Done {
                    fingerprint: first,
                    seq,
                    ..
                } if *first == fingerprint
                    || (*seq < raw_before && *first == self::fingerprint(req, sent)) =>
                {
                    return Ok(Some(Begin::Replay { seq: *seq }))
                }
                KeyState::InFlight { fingerprint: first } if *first == fingerprint => {
                    return Err(ApiError::IdempotencyKeyInFlight)
                }
                _ => return Err(ApiError::IdempotencyKeyReused),
            },
            Entry::Vacant(entry) => {
                entry.insert(KeyState::InFlight { fingerprint });
            }
        }
        Ok(Some(Begin::Execute(KeyClaim {
            cache: self.clone(),
            id,
            digest,
            fingerprint,
            settled: false,
        })))
    }

    /// Over the cap, forgets the oldest stored answers until `max_keys` keys
    /// are left (keys in flight stay: their requests are running). Returns
    /// the first answer's row kept: the rows before it are to be deleted.
    /// Answers are stored in row order, so the oldest have the lowest rows.
    pub fn evict_over_cap(&self) -> Option<i64> {
        if self.max_keys == 0 {
            return None;
        }
        let excess = self.entries.len().checked_sub(self.max_keys)?;
        if excess == 0 {
            return None;
        }
        let mut rows: Vec<i64> = self
            .entries
            .iter()
            .filter_map(|entry| match entry.value() {
                KeyState::Done { seq, .. } => Some(*seq),
                KeyState::InFlight { .. } => None,
            })
            .collect();
        let first_kept = if excess < rows.len() {
            *rows.select_nth_unstable(excess).1
        } else {
            rows.iter().max()? + 1
        };
        let mut evicted = 0;
        self.entries.retain(|_, entry| {
            let old = matches!(entry, KeyState::Done { seq, .. } if *seq < first_kept);
            evicted += usize::from(old);
            !old
        });
        telemetry::keys_evicted(evicted);
        Some(first_kept)
    }

    /// Forgets answers older than the retention period.
    pub fn forget_expired(&self) {
        let cutoff = self.cutoff();
        self.entries.retain(
            |_, entry| !matches!(entry, KeyState::Done { stored_at, .. } if *stored_at < cutoff),
        );
    }

    /// Unix seconds before which stored answers are expired.
    pub fn cutoff(&self) -> i64 {
        Self::cutoff_for(self.retention)
    }

    /// Unix seconds before which answers kept for `retention` are expired.
    pub fn cutoff_for(retention: Duration) -> i64 {
        now() - retention.as_secs() as i64
    }
}

/// A claim on an idempotency key: marks the key in flight. Turned into a [`StoredAnswer`] that rides with the
/// change to the database; if it is dropped instead, the key is free again.
pub struct KeyClaim {
    cache: Arc<Idempotency>,
    id: KeyId,
    digest: KeyDigest,
    fingerprint: Fingerprint,
    settled: bool,
}

impl KeyClaim {
    /// The key claimed.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Another instance stored an answer under this key (`stored`): it is
    /// remembered here too, and replayed (`Ok` with its row) if it answered
    /// the same request, else the key was reused (422).
    pub fn stored_elsewhere(mut self, stored: StoredKey) -> Result<i64, ApiError> {
        self.settled = true;
        self.cache.entries.insert(
            self.digest,
            KeyState::Done {
                fingerprint: stored.fingerprint,
                seq: stored.seq,
                stored_at: stored.stored_at,
            },
        );
        match stored.fingerprint == self.fingerprint {
            true => Ok(stored.seq),
            false => Err(ApiError::IdempotencyKeyReused),
        }
    }

    /// The answer to store, and the claim that completes it once stored.
    pub fn answer(mut self, answer: Answer) -> Pending {
        let stored = StoredAnswer {
            // The claim keeps only the digest from here on.
            id: std::mem::take(&mut self.id),
            fingerprint: self.fingerprint,
            answer,
            stored_at: now(),
        };
        Pending {
            stored,
            claim: self,
        }
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if !self.settled {
            self.cache.entries.remove_if(&self.digest, |_, entry| {
                matches!(entry, KeyState::InFlight { .. })
            });
        }
    }
}

/// An answer on its way to the database with its change.
pub struct Pending {
    pub stored: StoredAnswer,
    claim: KeyClaim,
}

impl Pending {
    /// Called once the transaction holding the answer committed it as row
    /// `seq`: retries replay it.
    pub fn committed(mut self, seq: i64) {
        self.claim.settled = true;
        self.claim.cache.entries.insert(
            self.claim.digest,
            KeyState::Done {
                fingerprint: self.stored.fingerprint,
                seq,
                stored_at: self.stored.stored_at,
            },
        );
    }
}

/// Keys are scoped per API key: a digest of the bearer token, never the token itself.
fn scope_of(req: &HttpRequest) -> String {
    match req.headers().get(AUTHORIZATION) {
        Some(token) => {
            let digest = Sha256::digest(token.as_bytes());
            let mut hex = String::with_capacity(2 * digest.len());
            for byte in digest {
                let _ = write!(hex, "{byte:02x}");
            }
            hex
        }
        None => String::new(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn with_key(key: &str) -> HttpRequest {
        TestRequest::default()
            .uri("/api/book")
            .insert_header((HEADER, key))
            .to_http_request()
    }

    /// `key`'s answer, committed in row `seq`.
    fn answered(idempotency: &Arc<Idempotency>, key: &str, seq: i64) {
        let Ok(Some(Begin::Execute(claim))) =
            idempotency.begin(&with_key(key), || b"{}".to_vec(), b"{}")
        else {
            panic!("{key} is new");
        };
        let answer = Answer {
            status: 200,
            body: "{}".into(),
        };
        claim.answer(answer).committed(seq);
    }

    /// The row `key`'s retry would replay, or `None` if it would run anew.
    fn replayed_row(idempotency: &Arc<Idempotency>, key: &str) -> Option<i64> {
        match idempotency.begin(&with_key(key), || b"{}".to_vec(), b"{}") {
            Ok(Some(Begin::Replay { seq })) => Some(seq),
            Ok(Some(Begin::Execute(_))) => None,
            _ => panic!("{key}: neither a replay nor a new request"),
        }
    }

    #[test]
    fn over_the_cap_the_oldest_answers_are_forgotten_and_keys_in_flight_stay() {
        let idempotency = Arc::new(Idempotency::new(Duration::from_secs(60), 3));
        for (key, seq) in [("a", 14), ("b", 11), ("c", 13), ("d", 12)] {
            answered(&idempotency, key, seq);
        }
        let Ok(Some(Begin::Execute(_running))) =
            idempotency.begin(&with_key("e"), || b"{}".to_vec(), b"{}")
        else {
            panic!("e is new");
        };
        // Five keys, three kept: the two oldest answers go, not the one running.
        assert_eq!(idempotency.evict_over_cap(), Some(13));
        assert_eq!(idempotency.keys_kept(), 3);
        assert_eq!(idempotency.evict_over_cap(), None, "within the cap");
        let rows = ["a", "b", "c", "d"].map(|key| replayed_row(&idempotency, key));
        assert_eq!(rows, [Some(14), None, Some(13), None]);
        assert_eq!(
            idempotency
                .begin(&with_key("e"), || b"{}".to_vec(), b"{}")
                .err()
                .map(|e| e.to_string()),
            Some(ApiError::IdempotencyKeyInFlight.to_string())
        );
    }

    #[test]
    fn a_cap_below_the_keys_in_flight_forgets_every_answer() {
        let idempotency = Arc::new(Idempotency::new(Duration::from_secs(60), 1));
        answered(&idempotency, "a", 1);
        answered(&idempotency, "b", 2);
        let Ok(Some(Begin::Execute(_first))) =
            idempotency.begin(&with_key("c"), || b"{}".to_vec(), b"{}")
        else {
            panic!("c is new");
        };
        let Ok(Some(Begin::Execute(_second))) =
            idempotency.begin(&with_key("d"), || b"{}".to_vec(), b"{}")
        else {
            panic!("d is new");
        };
        assert_eq!(idempotency.evict_over_cap(), Some(3));
        assert_eq!(idempotency.keys_kept(), 2, "both in flight stay");
        assert_eq!(idempotency.evict_over_cap(), None, "nothing left to forget");
    }

    #[test]
    fn no_cap_keeps_every_key() {
        let idempotency = Arc::new(Idempotency::new(Duration::from_secs(60), 0));
        for seq in 1..=5 {
            answered(&idempotency, &format!("k{seq}"), seq);
        }
        assert_eq!(idempotency.evict_over_cap(), None);
        assert_eq!(idempotency.keys_kept(), 5);
    }

    /// Stored with every answer: it must read the same after an upgrade.
    #[test]
    fn the_scope_is_the_hex_sha256_of_the_authorization_header() {
        let keyed = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer abc"))
            .to_http_request();
        assert_eq!(
            scope_of(&keyed),
            "c355dce96c1612880d11940ffdd9014d386c253e0c3652a6cd06a7226f7bd2b6"
        );
        assert_eq!(scope_of(&TestRequest::default().to_http_request()), "");
    }
}
