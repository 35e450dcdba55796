//! Integration tests over the real `corral` binary and real processes. One test binary (one link
//! step). Every test that starts processes ends with `assert_no_leftovers`, and every wait has a
//! deadline.

mod harness;
mod redact;

mod config;
mod daemon;
mod dashboard;
mod export;
mod formats;
mod hardening;
mod in_process;
mod instances;
mod logs;
mod mcp;
mod metrics;
mod ports;
mod procs;
mod run;
mod snapshots_human;
mod stop;
mod tickets;
mod tui;
mod up;
mod webdriver;
