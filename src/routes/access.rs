//! Who may call the API, and how often: API keys (401, 403) and a rate limit
//! per client (429), checked before a request reaches its route.

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

use crate::configuration::{AuthSettings, RateLimitSettings};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Client,
    Admin,
}

/// The configured keys and the rate limiter, shared by all workers.
pub struct Access {
    admin_keys: Vec<Vec<u8>>,
    client_keys: Vec<Vec<u8>>,
    /// `None` when rate limiting is off.
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    trust_proxy: bool,
}

impl Access {
    pub fn new(auth: &AuthSettings, rate_limit: &RateLimitSettings) -> Self {
        let bytes = |keys: &[String]| keys.iter().map(|key| key.as_bytes().to_vec()).collect();
        let limiter = rate_limit.enabled.then(|| {
            let per_second = NonZeroU32::new(rate_limit.per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(rate_limit.burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Access {
            admin_keys: bytes(&auth.admin_keys),
            client_keys: bytes(&auth.client_keys),
            limiter,
            trust_proxy: rate_limit.trust_proxy,
        }
    }

    /// No keys configured: anyone may do anything.
    pub fn is_open(&self) -> bool {
        self.admin_keys.is_empty() && self.client_keys.is_empty()
    }

    /// Forgets clients that have been quiet long enough to be back at a full
    /// burst, so the limiter's memory follows the active clients.
    pub fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The role of `token`. Every key is compared, each in constant time, so
    /// the time taken tells nothing about how close a guess was.
    fn role_of(&self, token: &[u8]) -> Option<Role> {
        let matches = |keys: &[Vec<u8>]| {
            keys.iter()
                .fold(0u8, |found, key| found | key.ct_eq(token).unwrap_u8())
        };
        match (matches(&self.admin_keys), matches(&self.client_keys)) {
            (1, _) => Some(Role::Admin),
            (_, 1) => Some(Role::Client),
            _ => None,
        }
    }

    /// The client's address: the peer, or behind a trusted proxy the last
    /// `X-Forwarded-For` entry (the one that proxy added).
    fn client_address(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let forwarded = self
            .trust_proxy
            .then(|| {
                req.headers()
                    .get("x-forwarded-for")?
                    .to_str()
                    .ok()?
                    .rsplit(',')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .flatten();
        forwarded.or_else(|| req.peer_addr().map(|peer| peer.ip()))
    }

    fn check(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        let token = bearer_token(req);
        let role = token.and_then(|token| self.role_of(token));
        if let Some(limiter) = &self.limiter {
            // A valid key is the client; anyone else (wrong keys included) is its address.
            let client = match (role, token) {
                (Some(_), Some(token)) => format!("key:{}", String::from_utf8_lossy(token)),
                _ => format!(
                    "ip:{}",
                    self.client_address(req)
                        .map_or("unknown".into(), |ip| ip.to_string())
                ),
            };
            if let Err(not_until) = limiter.check_key(&client) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(ApiError::RateLimited {
                    retry_after_secs: wait.as_secs() + 1,
                });
            }
        }
        if self.is_open() {
            return Ok(());
        }
        // The path as the router reads it, percent-decoded: `/api/%65vents` is `/api/events`.
        let path = percent_decode_str(req.path()).decode_utf8_lossy();
        // Creating an event, and changing one (the only PATCH route).
        let admin_route = path == "/api/initialize"
            || (path == "/api/events" && req.method() == Method::POST)
            || req.method() == Method::PATCH;
        let needed = if admin_route {
            Role::Admin
        } else {
            Role::Client
        };
        match role {
            None => Err(ApiError::Unauthorized),
            Some(role) if role < needed => Err(ApiError::Forbidden),
            Some(_) => Ok(()),
        }
    }
}

/// The key of `Authorization: Bearer <key>`, if the header has that form.
fn bearer_token(req: &ServiceRequest) -> Option<&[u8]> {
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then_some(token)
        .filter(|token| !token.is_empty())
}

/// Middleware: answers 401, 403 or 429 itself, or passes the request on. The
/// refusal is a response, not an error, so CORS headers are added to it.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let refused = req
        .app_data::<web::Data<Access>>()
        .and_then(|access| access.check(&req).err());
    match refused {
        Some(error) => Ok(req
            .into_response(error.error_response())
            .map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}
