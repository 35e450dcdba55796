//! # corral-api: the HTTP API
//!
//! ## Theory of operation
//!
//! [`routes::router`] is an axum router over a [`corral_runtime::Control`]: every handler turns
//! a request into a request to the owner of what it is about — the supervisor (units), the
//! ad-hoc processes' or the instances' owner — or subscribes to their event and output
//! broadcasts. Nothing here holds state of its own, so the API cannot disagree with them.
//! [`daemon::run`] is a whole project served: the supervisor and this API, as one function.
//!
//! It is served on a Unix socket in the state dir (mode 0600: only the user gets in), and
//! optionally on loopback TCP for the dashboard and remote tools, where every request needs a
//! token and a loopback Host header ([`auth`]).
//!
//! Errors are JSON `{"code": "...", "message": "..."}` with a 4xx status for bad input; a slow
//! client of a stream is dropped behind (it is told how many events it missed), never waited on.
//!
//! The routes live by subject under [`routes`] (`units`, `logs`, `events`, `procs`,
//! `instances`, `runs`, `metrics`, `daemon`); [`error`] is the one error type; [`server`] serves
//! the router on the Unix socket and on TCP.
//!
//! The JSON shapes and the client live in `corral-proto`, which clients link instead of this
//! crate; [`convert`] maps the runtime's views onto them. `openapi.json` next to this crate
//! describes every route; the router records the routes it registers ([`table`]) and a test
//! holds the document to exactly them.

pub mod auth;
pub mod convert;
pub mod daemon;
pub mod error;
mod query;
pub mod routes;
pub mod server;

#[cfg(test)]
mod fuzz;

pub use routes::{router, table};
pub use server::{Server, serve_tcp, serve_unix};

/// The OpenAPI document, as kept in the repository.
pub const OPENAPI: &str = include_str!("../openapi.json");
