//! The dashboard in headless Chromium (through chromedriver, as in the tests): the time from the
//! login link to the full overview with N units, the time from a change to the page showing it,
//! the size of the page's assets (raw and gzipped), and the daemon's CPU while a tab is open and
//! nothing happens.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{
    corral_cmd, cpu_and_rss, daemon_pid, http, median, ms, project, sleep_services, wait_running,
};

#[path = "../../corral/tests/it/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// GET `path` over TCP with the token: the body.
fn get(addr: &str, path: &str, token: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| i + 4);
    resp[at..].to_vec()
}

fn gzipped(bytes: &[u8]) -> usize {
    let mut gz = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    gz.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = gz.wait_with_output().unwrap();
    out.stdout.len()
}

/// Runs `corral down` in its project when dropped, also when a step panics.
struct Down<'a>(&'a Path, &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0)
            .arg("down")
            .current_dir(self.1)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn run(corral: &Path, n: usize) {
    let Some(b) = webdriver::Browser::start() else {
        println!("dashboard: skipped (install chromium and chromium-driver)");
        return;
    };
    let dir = project(&format!(
        "{}[templates.box]\ncommand = [\"sleep\", \"1000\"]\n",
        sleep_services(n)
    ));
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    // Whatever happens below, the stack goes (the project directory goes with `dir`).
    let _down = Down(corral, dir.path());
    wait_running(corral, dir.path(), n, false);
    let link = corral_cmd(corral, dir.path(), &["dashboard", "--no-open"]);
    let link = link.trim();
    let addr = link
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(dir.path().join(".corral/token")).unwrap();
    println!("the dashboard in headless Chromium, {n} units");

    // What a first visit transfers: the page, its script and its style.
    let page = get(&addr, "/", token.trim());
    let text = String::from_utf8_lossy(&page).into_owned();
    let mut raw = page.len();
    let mut zipped = gzipped(&page);
    for marker in ["src=\"", "href=\""] {
        let path = text
            .split(marker)
            .find_map(|r| r.split('"').next().filter(|p| p.starts_with("/assets/")))
            .unwrap_or("/assets/none");
        let body = get(&addr, path, token.trim());
        raw += body.len();
        zipped += gzipped(&body);
    }
    println!(
        "  assets         {:.1} KiB, {:.1} KiB gzipped (page + script + style)",
        raw as f64 / 1024.0,
        zipped as f64 / 1024.0
    );

    // Login link → every unit on the page.
    let rows = |b: &webdriver::Browser| {
        b.eval("return document.querySelectorAll('#units tr[data-unit]').length;")
            .as_u64()
            .unwrap_or(0) as usize
    };
    let t0 = Instant::now();
    b.goto(link);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(&b) < n {
        assert!(
            Instant::now() < deadline,
            "the overview never showed {n} units"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "  login → overview  {:>8}   (link opened until all {n} rows are on the page)",
        ms(t0.elapsed())
    );

    // A change → the page shows it: the page notes when the row's state changes.
    b.eval(
        "window.__seen = {}; new MutationObserver((ms) => { for (const m of ms) { const r = m.target; \
         if (r.dataset && r.dataset.unit === 's0') window.__seen[r.dataset.state] = Date.now(); } })\
         .observe(document.querySelector('#units tbody'), {subtree: true, attributes: true, attributeFilter: ['data-state']}); return 0;",
    );
    let mut lat = Vec::new();
    for _ in 0..10 {
        for (verb, state) in [("stop", "inactive"), ("start", "running")] {
            b.eval("window.__seen = {}; return 0;");
            let sent = now_ms();
            http(dir.path(), "POST", &format!("/v1/services/s0/{verb}"), "");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let seen = b.eval(&format!("return window.__seen['{state}'] || 0;"));
                if let Some(t) = seen.as_f64().filter(|t| *t > 0.0) {
                    lat.push(Duration::from_secs_f64(((t - sent).max(0.0)) / 1000.0));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the page never showed s0 {state}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let worst = lat.iter().max().copied().unwrap_or_default();
    println!(
        "  change → page     {:>8} median, {} worst   (API stop/start until the row's state changes; 20 changes)",
        ms(median(lat)),
        ms(worst)
    );

    // DevBox's page: 100 instances beside the units. A fresh visit until every unit row and
    // every instance row is on the page, and how many unit rows were filled in (the rest wait
    // until they scroll into view).
    let boxes = 100;
    for _ in 0..boxes {
        let body = http(
            dir.path(),
            "POST",
            "/v1/instances",
            r#"{"template": "box"}"#,
        );
        assert!(body.contains("\"name\""), "{body}");
    }
    wait_running(corral, dir.path(), n + boxes, false);
    let instance_rows = |b: &webdriver::Browser| {
        b.eval("return document.querySelectorAll('#instances tr[data-instance]').length;")
            .as_u64()
            .unwrap_or(0) as usize
    };
    let t0 = Instant::now();
    b.goto(link);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(&b) < n + boxes {
        assert!(
            Instant::now() < deadline,
            "the page never showed {} units",
            n + boxes
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t0.elapsed();
    let filled = b
        .eval("return document.querySelectorAll('#units tr[data-unit]:not(.pending)').length;")
        .as_u64()
        .unwrap_or(0);
    println!(
        "  +{boxes} instances   {:>8}   (link opened until all {} unit rows are on the page; {filled} filled in, the rest as they scroll into view)",
        ms(took),
        n + boxes
    );
    let t0 = Instant::now();
    b.click("nav a[data-view='instances']");
    let deadline = Instant::now() + Duration::from_secs(30);
    while instance_rows(&b) < boxes {
        assert!(
            Instant::now() < deadline,
            "the instances view never showed {boxes} rows"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "  instances view    {:>8}   (the tab clicked until its {boxes} rows are on the page)",
        ms(t0.elapsed())
    );
    b.click("nav a[data-view='units']");
    // Scrolling to the end fills the rows that come into view. Scrolled again on each look: a
    // scroll before the view is shown again moves nothing (seen once in a --quick run).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .eval("const last = document.querySelector('#units tbody tr:last-child'); last.scrollIntoView(); return last.classList.contains('pending');")
        .as_bool()
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the last row was never filled in");
        std::thread::sleep(Duration::from_millis(2));
    }

    // A tab open, nothing happening: what the daemon spends.
    let pid = daemon_pid(dir.path());
    let window = Duration::from_secs(10);
    let (cpu0, _) = cpu_and_rss(pid);
    std::thread::sleep(window);
    let (cpu1, _) = cpu_and_rss(pid);
    println!(
        "  idle, tab open    daemon CPU {:.3} %   (over {}s; the page refreshes metrics every 10 s while seen)",
        (cpu1 - cpu0) / window.as_secs_f64() * 100.0,
        window.as_secs()
    );
    let left = b.close();
    assert!(left.is_empty(), "the browser left {left:?}");
}
