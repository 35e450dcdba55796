//! Log queries over the files (tail, since, grep, several units by time) and `follow` as a
//! server-sent event stream that joins the live tap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use corral_proto::wire;
use corral_runtime::Snapshot;
use corral_runtime::logs::{Query, Tail, UnitLog, query_units};

use crate::routes::units::position;
use regex::{Regex, RegexBuilder};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::error::{ApiError, ApiResult};
use crate::query::{flag, params, sse_json};
use crate::routes::App;

/// What a log request asks for.
#[derive(Debug)]
pub struct LogParams {
    pub services: Vec<String>,
    pub query: Query,
    pub follow: bool,
}

/// The longest `tail` we serve in one answer.
const MAX_TAIL: usize = 1_000_000;

pub fn log_params(map: &HashMap<String, String>) -> ApiResult<LogParams> {
    let tail = match map.get("tail") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_TAIL => Some(n),
            _ => {
                return Err(ApiError::bad(format!(
                    "`tail` must be a number from 0 to {MAX_TAIL}, not `{v}`"
                )));
            }
        },
    };
    let since = match map.get("since") {
        None => None,
        Some(v) => Some(parse_when("since", v)?),
    };
    let grep = match map.get("grep") {
        None => None,
        Some(v) => Some(compile_grep(v)?),
    };
    let until = match map.get("until") {
        None => None,
        Some(v) => Some(parse_when("until", v)?),
    };
    let stream =
        match map.get("stream") {
            None => None,
            Some(v) => Some(corral_runtime::logs::Stream::from_tag(v).ok_or_else(|| {
                ApiError::bad(format!("`stream` must be `out` or `err`, not `{v}`"))
            })?),
        };
    let services = map
        .get("services")
        .map(|s| {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(LogParams {
        services,
        query: Query {
            tail,
            since,
            grep,
            until,
            stream,
        },
        follow: flag(map, "follow")?,
    })
}

/// An RFC 3339 time, or a duration meaning "that long ago" (`5m`, `1h 30m`).
fn parse_when(key: &str, v: &str) -> ApiResult<SystemTime> {
    corral_runtime::logs::parse_when(v).ok_or_else(|| {
        ApiError::bad(format!(
            "`{key}` must be a time (2026-01-02T15:04:05Z) or a duration ago (10m, 2h), not `{v}`"
        ))
    })
}

fn compile_grep(v: &str) -> ApiResult<Regex> {
    RegexBuilder::new(v)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ApiError::bad(format!("`grep` is not a valid pattern: {e}")))
}

/// The lines of the units at `units` (positions in the snapshot), interleaved by time. Each
/// file is read only up to its `ends` entry, when it has one (where a follow starts).
fn read_logs(
    snap: &Snapshot,
    units: &[usize],
    q: &Query,
    ends: &[Option<u64>],
) -> ApiResult<Vec<wire::Line>> {
    let logs: Vec<UnitLog> = units
        .iter()
        .zip(ends)
        .map(|(&i, &end)| UnitLog {
            path: snap.log_path(&snap.units[i]),
            keep_files: snap.units[i].keep_files,
            end,
        })
        .collect();
    let name = |i: usize| &snap.units[units[i]].name;
    let lines = query_units(&logs, q).map_err(|(i, e)| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "log_read",
        message: format!("cannot read the log of `{}`: {e}", name(i)),
    })?;
    Ok(lines
        .into_iter()
        .map(|(i, l)| l.into_wire(name(i).clone()))
        .collect())
}

pub(crate) async fn service_logs(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let map = params(
        q.as_deref(),
        &["tail", "since", "grep", "until", "stream", "follow"],
    )?;
    let mut p = log_params(&map)?;
    p.services = vec![name];
    serve_logs(app, p).await
}

pub(crate) async fn logs(State(app): State<App>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let map = params(
        q.as_deref(),
        &[
            "services", "tail", "since", "grep", "until", "stream", "follow",
        ],
    )?;
    serve_logs(app, log_params(&map)?).await
}

pub(crate) async fn serve_logs(app: App, mut p: LogParams) -> ApiResult<Response> {
    let snap = app.control.snapshot().await?;
    // The units asked for, as positions in the snapshot: found once (a search of the list for
    // each name made a log of all 5,000 services quadratic).
    let units: Vec<usize> = if p.services.is_empty() {
        p.services = snap.units.iter().map(|u| u.name.clone()).collect();
        (0..snap.units.len()).collect()
    } else {
        let at: HashMap<&str, usize> = snap
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        p.services
            .iter()
            .map(|n| match at.get(n.as_str()) {
                Some(&i) => Ok(i),
                // Not there: the search says so, as for one unit.
                None => position(&snap, n),
            })
            .collect::<ApiResult<_>>()?
    };
    // Where each followed file ends now: the backlog is read up to there, the follow reads on
    // from there — no line in both, none in neither. Subscribed first, so a line written after
    // this moment wakes the follower.
    let rx = p.follow.then(|| app.control.lines());
    let tails: Vec<Tail> = if p.follow {
        units
            .iter()
            .map(|&i| Tail::at_end(&snap.log_path(&snap.units[i])))
            .collect()
    } else {
        Vec::new()
    };
    let ends: Vec<Option<u64>> = if p.follow {
        tails.iter().map(|t| Some(t.position())).collect()
    } else {
        vec![None; units.len()]
    };
    let (snap2, q) = (snap.clone(), p.query.clone());
    let lines = tokio::task::spawn_blocking(move || read_logs(&snap2, &units, &q, &ends))
        .await
        .map_err(|_| ApiError::bad("log read failed"))??;
    let Some(rx) = rx else {
        return Ok(Json(lines).into_response());
    };
    let units_followed = tails.len();
    let follow = Follow {
        rx,
        wanted: p
            .services
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
        tails: p.services.into_iter().zip(tails).collect(),
        news: Vec::new(),
        noted: vec![false; units_followed],
        all: false,
        pending: std::collections::VecDeque::new(),
        busy: false,
        grep: p.query.grep,
        stream: p.query.stream,
    };
    let backlog = futures_util::stream::iter(
        lines
            .into_iter()
            .map(|l| Ok::<_, Infallible>(sse_json("line", &l))),
    );
    let live = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(line) = f.pending.pop_front() {
                return Some((Ok(sse_json("line", &line)), f));
            }
            // Wait for news of a followed unit (or a lag: news lost), or, while lines keep
            // coming, a short tick: the keeper may drop tap frames under load — the file has
            // them.
            tokio::select! {
                r = f.rx.recv() => match r {
                    Ok(l) => {
                        if !f.note(&l.unit) {
                            continue;
                        }
                    }
                    Err(RecvError::Lagged(_)) => f.all = true,
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(Duration::from_millis(250)), if f.busy => f.all = true,
            }
            // One look serves every notice already queued.
            loop {
                match f.rx.try_recv() {
                    Ok(l) => {
                        f.note(&l.unit);
                    }
                    Err(TryRecvError::Lagged(_)) => f.all = true,
                    Err(_) => break,
                }
            }
            f.read_files();
        }
    });
    let stream = futures_util::StreamExt::chain(backlog, live);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A follower: it reads the log files from where the backlog ended; the live tap only wakes it.
struct Follow {
    rx: tokio::sync::broadcast::Receiver<Arc<corral_runtime::LineNotice>>,
    /// Each followed unit's place in `tails`, by name.
    wanted: HashMap<String, usize>,
    tails: Vec<(String, Tail)>,
    /// The units with news since the last look, or `all` of them (news was lost, or the tick:
    /// the keeper may drop tap frames under load). A follower of thousands of units looked at
    /// every one at each line of any (one `stat` each, 1,000 units: a fifth of a core).
    news: Vec<usize>,
    /// Whether each unit is in `news`.
    noted: Vec<bool>,
    all: bool,
    pending: std::collections::VecDeque<wire::Line>,
    /// The last read found lines: look again shortly even without news.
    busy: bool,
    grep: Option<Regex>,
    stream: Option<corral_runtime::logs::Stream>,
}

impl Follow {
    /// A unit has news: read it at the next look. False if it is not followed.
    fn note(&mut self, unit: &str) -> bool {
        let Some(&i) = self.wanted.get(unit) else {
            return false;
        };
        if !std::mem::replace(&mut self.noted[i], true) {
            self.news.push(i);
        }
        true
    }

    fn read_files(&mut self) {
        let mut new = Vec::new();
        let mut look = std::mem::take(&mut self.news);
        for &i in &look {
            self.noted[i] = false;
        }
        if std::mem::take(&mut self.all) {
            look = (0..self.tails.len()).collect();
        }
        for i in look {
            let (name, tail) = &mut self.tails[i];
            // Appended bytes of files in the page cache: short reads, fine on this task.
            let Ok(lines) = tail.read_new() else { continue };
            new.extend(
                lines
                    .into_iter()
                    .filter(|l| self.grep.as_ref().is_none_or(|g| g.is_match(&l.text)))
                    .filter(|l| self.stream.is_none_or(|s| s == l.stream))
                    .map(|l| l.into_wire(name.clone())),
            );
        }
        self.busy = !new.is_empty();
        // Several units: by time (stable: each unit keeps its order).
        new.sort_by_key(|l| l.time_ms);
        self.pending.extend(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_signal;
    use crate::routes::units::definition;
    use axum::http::StatusCode;
    use proptest::prelude::*;

    #[test]
    fn query_parsing_refuses_with_reasons() {
        let m = params(Some("tail=5&grep=a%20b"), &["tail", "grep"]).unwrap();
        let p = log_params(&m).unwrap();
        assert_eq!(p.query.tail, Some(5));
        assert!(p.query.grep.unwrap().is_match("xa by"));
        let e = params(Some("tial=5"), &["tail"]).unwrap_err();
        assert!(
            e.message.contains("unknown query parameter `tial`"),
            "{}",
            e.message
        );
        assert_eq!(parse_signal("hup").unwrap(), 1);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert!(parse_signal("0").is_err() && parse_signal("32").is_err());
        let since = log_params(&params(Some("since=10m"), &["since"]).unwrap()).unwrap();
        assert!(since.query.since.unwrap() < SystemTime::now());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives in a query string: an answer or a 400, never a panic.
        #[test]
        fn definitions_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), text in ".{0,200}") {
            let _ = definition(&body, None);
            let _ = definition(text.as_bytes(), Some("x"));
        }

        #[test]
        fn query_parsing_never_panics(raw in ".{0,200}", key in "(tail|since|grep|follow|services|dependents|signal|limit)", value in ".{0,64}") {
            let _ = params(Some(&raw), &["tail", "since", "grep", "follow", "services"]).and_then(|m| log_params(&m));
            let mut m = HashMap::new();
            m.insert(key.clone(), value.clone());
            if let Err(e) = log_params(&m) {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            }
            let _ = flag(&m, &key);
            let _ = parse_signal(&value);
        }
    }
}
