//! A real browser for the dashboard tests: headless Chromium driven by chromedriver over the W3C
//! WebDriver protocol — plain JSON over loopback HTTP, so a few calls here instead of a client
//! crate. chromedriver runs in a process group of its own, ended with everything in it (the
//! browser too) when the [`Browser`] is closed or dropped. Chromium double-forks some helpers
//! (crash handler, zygote): the test process becomes their subreaper, so they come back to it
//! and are reaped, not left as zombies of init.
//!
//! Written once for the tests and the benchmark (`corral-bench` includes this file), so it uses
//! nothing of either.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// Whether a browser test must run here: CI installs Chromium, so there a missing one is a
/// failure; elsewhere the test says it was skipped.
pub fn required() -> bool {
    std::env::var_os("CI").is_some()
}

impl Browser {
    /// Start chromedriver and a headless Chromium session; None if they are not installed.
    pub fn start() -> Option<Browser> {
        nix::sys::prctl::set_child_subreaper(true).ok()?;
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        // A free port, from the kernel.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let driver = std::os::unix::process::CommandExt::process_group(
            Command::new(driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .ok()?;
        let profile = tempfile::tempdir().ok()?;
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.request("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // What this machine needs: no sandbox as root, no GPU, and nothing that reaches
                // for the network on its own.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-quic",
                         format!("--user-data-dir={}", b._profile.path().display())]
            }
        }}});
        let v = b
            .request("POST", "/session", Some(caps))
            .expect("a browser session");
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        // A laptop's window, for the screenshots.
        b.call(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        );
        Some(b)
    }

    /// One WebDriver call: its JSON answer, or an error naming what failed.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open whatever we ask: read the head, then exactly
        // Content-Length bytes.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed in the head".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad answer: {head}"))?;
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status >= 400 {
            return Err(format!("{method} {path}: {v}"));
        }
        Ok(v)
    }

    fn call(&self, method: &str, rest: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{rest}", self.session);
        self.request(method, &path, body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))["value"]
            .clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page; what it returns.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Click the element `css` finds (it must appear within a few seconds). A page that
    /// redraws between the find and the click makes the element stale: found again then.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let id = self.find(css);
            let click = format!("/session/{}/element/{id}/click", self.session);
            match self.request("POST", &click, Some(json!({}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("webdriver: {e}"),
            }
        }
    }

    /// The id of the element `css` finds, waiting a few seconds for it.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let path = format!("/session/{}/element", self.session);
            let found = self.request(
                "POST",
                &path,
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = found.ok().and_then(|v| {
                v["value"]
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            }) {
                return id;
            }
            assert!(Instant::now() < deadline, "no element `{css}`");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `text` into the element `css` finds (for a file input: a path to upload).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// A screenshot of the page, written to `target/dashboard-shots/NAME.png`.
    pub fn screenshot(&self, name: &str) {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap_or_default());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-shots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The text of the open `confirm`/`prompt`, accepted.
    pub fn accept_alert(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let path = format!("/session/{}/alert/text", self.session);
            if let Ok(v) = self.request("GET", &path, None) {
                let text = v["value"].as_str().unwrap_or_default().to_string();
                self.call("POST", "/alert/accept", Some(json!({})));
                return text;
            }
            assert!(Instant::now() < deadline, "no dialog opened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// End the browser and chromedriver; what is left of them afterwards (live processes of
    /// this browser's profile, or zombies of ours), which a test asserts empty.
    pub fn close(mut self) -> Vec<i32> {
        self.end();
        let profile = self._profile.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            reap();
            let left: Vec<i32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let ours = String::from_utf8_lossy(&cmd).contains(&profile);
                    match state_and_parent(*pid) {
                        Some((state, ppid)) => {
                            let zombie = state == 'Z';
                            (ours && !zombie) || (zombie && ppid == std::process::id() as i32)
                        }
                        None => false,
                    }
                })
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn end(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.request("DELETE", &path, None);
            self.session.clear();
        }
        // chromedriver, and whatever browser is left in its group.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// A process's state letter and parent, from `/proc/PID/stat`.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// Reap whatever children of ours have exited (the browser's re-parented helpers).
pub fn reap() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end();
        reap();
    }
}

/// Standard base64 (what WebDriver sends screenshots in); eight lines rather than a crate.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
