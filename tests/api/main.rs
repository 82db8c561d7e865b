//! Black-box tests: the real server binary, a temporary database, HTTP.

mod access;
mod bad_input;
mod book;
mod cancel;
mod concurrency;
mod configuration;
mod container;
mod docs;
mod durability;
mod error_codes;
mod head;
mod helpers;
mod idempotency;
mod initialize;
mod markdown;
mod one_reading;
mod open_files;
mod operations;
mod overload;
mod postgres;
mod postgres_server;
mod resources;
mod status;
mod storage_failure;
mod user_identity;
mod virtual_actors;
