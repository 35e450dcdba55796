//! # corral-proto: how programs talk to a running corral
//!
//! ## Theory of operation
//!
//! A running corral (`corral up`, in a terminal or as a daemon) serves an HTTP API on a Unix
//! socket in the project's state dir, and optionally on loopback TCP with a token. This crate is
//! everything a client needs and nothing more: the JSON shapes ([`wire`]), a client over either
//! transport ([`client`]), and where the state dir, the socket and the tokens are ([`paths`]).
//!
//! It depends on no other corral crate, so the CLI's client commands, the terminal UI, the
//! dashboard's tests and other programs link only this — not the supervisor, the store or the
//! engine. The server side (corral-api) converts its runtime's views into these types; they are
//! a contract with other programs and change only on purpose.
//!
//! States on the wire are typed ([`wire::UnitState`], [`wire::Condition`], [`wire::ReasonKind`],
//! [`wire::EventKind`]): nothing a program needs is only in English text.

pub mod client;
pub mod paths;
pub mod wire;

pub use client::{Client, ClientError, Method, Streamed};

/// `1.5s`, `500ms`, `2m 3s`: short, for people. (The engine words its own messages with the
/// same rule; kept here too so that clients link no engine.)
pub fn fmt_duration(d: std::time::Duration) -> String {
    use std::time::Duration;
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        let s = d.as_secs_f64();
        if (s - s.round()).abs() < 0.05 {
            format!("{}s", s.round() as u64)
        } else {
            format!("{s:.1}s")
        }
    } else {
        let s = d.as_secs();
        format!("{}m {}s", s / 60, s % 60)
    }
}

/// The first ten of a list, joined with commas, and how many more: a message about a stack of
/// thousands of units is not one line of thousands of names.
pub fn some_of<S: AsRef<str>>(items: &[S]) -> String {
    const SHOWN: usize = 10;
    let mut text = items
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::wire;

    #[test]
    fn a_long_list_is_cut_to_ten_and_counted() {
        assert_eq!(super::some_of(&["a", "b"]), "a, b");
        let many: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        assert_eq!(
            super::some_of(&many),
            "s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 and 2 more"
        );
        assert_eq!(super::some_of::<&str>(&[]), "");
    }

    /// Clients link only this crate: it must not grow a dependency on the server side.
    #[test]
    fn depends_on_no_server_crate() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .expect("a [dependencies] table");
        let names: Vec<&str> = deps
            .lines()
            .filter_map(|l| l.split(['=', '.']).next())
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.starts_with('#') && !n.starts_with('['))
            .collect();
        let allowed = [
            "serde",
            "serde_json",
            "hyper",
            "hyper-util",
            "http-body-util",
            "tokio",
        ];
        for n in &names {
            assert!(allowed.contains(n), "corral-proto must not depend on `{n}`");
        }
        assert!(
            names.contains(&"serde"),
            "parsed no dependencies: {names:?}"
        );
    }

    #[test]
    fn states_are_typed_on_the_wire() {
        let json = serde_json::json!({
            "name": "api", "kind": "service", "state": "blocked", "pid": null, "ready": false,
            "uptime_secs": null, "restarts": 0, "last_exit": {"code": 3}, "health": null,
            "ports": [], "waiting_on": [{"name": "db", "condition": "completed_successfully"}],
            "reason": null, "backoff_until_ms": null, "depends_on": [], "held": false,
            "adopted": false
        });
        let s: wire::Service = serde_json::from_value(json).unwrap();
        assert_eq!(s.state, wire::UnitState::Blocked);
        assert_eq!(s.last_exit, Some(wire::ExitStatus::Code(3)));
        assert_eq!(s.waiting_on[0].to_string(), "db (completed_successfully)");
        let unknown = serde_json::to_value(wire::ExitStatus::Unknown).unwrap();
        assert_eq!(unknown, "unknown");
        let bad = serde_json::from_str::<wire::UnitState>("\"running (not ready)\"");
        assert!(bad.is_err(), "English is not a state");
    }
}
