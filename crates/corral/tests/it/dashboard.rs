//! The web dashboard in a real browser (headless Chromium through chromedriver): signing in by
//! the link `corral dashboard` prints, the page without a session, live updates from changes
//! made elsewhere, actions by their accessible names, the graph, a read-only session; and at the
//! HTTP level, what the browser cannot show: the cookie's flags and the CSRF check.

use std::time::Duration;

use crate::harness::*;
use crate::webdriver::{Browser, required};

const T: Duration = Duration::from_secs(15);

const STACK: &str = r#"
[services.web]
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
ports = ["auto"]
readiness = { http = "/", interval = "200ms" }

[services.worker]
command = ["sleep", "1000"]
depends_on = { web = "healthy" }

[services.waits]
command = ["sleep", "1000"]
depends_on = { worker = "healthy", slow = "healthy" }

[services.slow]
command = ["sleep", "1000"]
readiness = { exec = "false", interval = "200ms" }

[services.talker]
command = "i=0; while true; do i=$((i+1)); echo tick $i; echo oops $i >&2; sleep 0.2; done"
env = { SECRET_TOKEN = "hunter2" }
stop = { signal = "SIGINT", timeout = "3s" }

[tasks.lint]
command = "true"

[tasks.check]
command = "sleep 0.2; exit 3"

[templates.box]
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
workdir = "{workspace}"
readiness = { http = "/" }
params = { greeting = "hi" }
"#;

fn ok(p: &Project, args: &[&str]) -> String {
    let (status, out, err) = p.run_client(args);
    assert!(status.success(), "corral {args:?}: {out}{err}");
    out
}

/// The state the dashboard shows for `unit` (its row's `data-state`), or "" without a row.
fn shown_state(b: &Browser, unit: &str) -> String {
    b.eval(&format!(
        "const r = document.querySelector('#units tr[data-unit=\"{unit}\"]'); return r ? r.dataset.state : '';"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn shown_pid(b: &Browser, unit: &str) -> String {
    b.eval(&format!(
        "const r = document.querySelector('#units tr[data-unit=\"{unit}\"]'); return r && r.children[4] ? r.children[4].textContent : '';"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(b) = Browser::start() else {
        assert!(
            !required(),
            "Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: no chromium/chromedriver here");
        return;
    };
    let p = Project::new(STACK);
    ok(&p, &["up", "-d"]);
    ok(&p, &["start", "worker", "--wait"]);
    // One command: the daemon starts listening, the link comes back.
    let link = ok(&p, &["dashboard", "--no-open"]).trim().to_string();
    assert!(link.starts_with("http://127.0.0.1:"), "{link}");
    let base = link.split("/login").next().unwrap().to_string();
    let token = p.read(".corral/token");
    assert!(link.ends_with(token.trim()), "{link}");

    // Without a session: how to get in, and nothing of the project.
    b.goto(&format!("{base}/"));
    let text = b.eval("return document.body.innerText;");
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains("needs a session"), "{text}");
    assert!(text.contains("corral dashboard"), "{text}");
    assert!(
        !text.contains("worker"),
        "project data without a session: {text}"
    );

    // The link signs in and leaves the address bar without the token.
    b.goto(&link);
    eventually(T, "the redirect to /", || b.url() == format!("{base}/"));
    eventually(T, "worker shown running", || {
        shown_state(&b, "worker") == "running"
    });
    // A blocked unit says what it waits on (once its row is filled in, as it comes into view).
    eventually(T, "waits says what it waits on", || {
        b.eval("return document.querySelector('#units tr[data-unit=\"waits\"]').innerText;")
            .as_str()
            .unwrap_or_default()
            .contains("slow (healthy)")
    });

    // Live: a change made elsewhere shows without a reload.
    ok(&p, &["stop", "worker", "--wait"]);
    eventually(Duration::from_secs(3), "worker shown stopped", || {
        shown_state(&b, "worker") == "inactive"
    });

    // Actions are buttons named for what they do to what.
    b.click("button[aria-label='Start worker']");
    eventually(T, "worker shown running again", || {
        shown_state(&b, "worker") == "running"
    });
    let outcome = b.eval("return document.querySelector('#outcome').textContent;");
    assert!(
        outcome.as_str().unwrap_or_default().contains("worker"),
        "{outcome}"
    );
    // A restart asks first; confirmed, web runs with a new PID.
    let mut before = String::new();
    eventually(T, "web's PID shown", || {
        before = shown_pid(&b, "web");
        !before.is_empty()
    });
    b.click("button[aria-label='Restart web']");
    let asked = b.accept_alert();
    assert!(asked.contains("Restart web"), "{asked}");
    eventually(T, "web restarted", || {
        let pid = shown_pid(&b, "web");
        !pid.is_empty() && pid != before && shown_state(&b, "web") == "running"
    });
    let api_pid = p.http("GET", "/v1/services/web").1;
    assert!(
        api_pid.contains(&format!("\"pid\":{}", shown_pid(&b, "web"))),
        "{api_pid}"
    );

    // The graph: a node per unit, the blocked edge marked with its condition.
    let nodes = b.eval("return document.querySelectorAll('#graph g.node').length;");
    assert_eq!(nodes, 7);
    let blocked = b.eval(
        "return [...document.querySelectorAll('#graph .cond')].map(t => t.textContent).join(',');",
    );
    assert_eq!(blocked.as_str().unwrap_or_default(), "healthy", "{blocked}");

    b.screenshot("units");

    // A unit's logs follow live, stderr marked; a regex filter highlights.
    b.click("button[aria-label='Show the logs of talker']");
    let log_text = || {
        b.eval("return document.querySelector('#logs').innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = {
        let mut n = 0;
        eventually(T, "talker's lines in the log view", || {
            n = log_text().matches("tick").count();
            n > 0
        });
        n
    };
    eventually(T, "more lines, live", || {
        log_text().matches("tick").count() > first
    });
    let err_lines = b.eval("return document.querySelectorAll('#logs div.err').length;");
    assert!(err_lines.as_u64().unwrap_or(0) > 0, "stderr not marked");
    b.type_into("#logs-filter", "oops [0-9]+");
    eventually(T, "only matching lines, highlighted", || {
        let marks = b.eval("return document.querySelectorAll('#logs mark').length;");
        marks.as_u64().unwrap_or(0) > 0 && !log_text().contains("tick")
    });
    // Its events are listed.
    eventually(T, "talker's events", || {
        b.eval("return document.querySelector('#logs-events').innerText;")
            .as_str()
            .unwrap_or_default()
            .contains("talker: started")
    });
    // Its definition: the command as written, the stop settings, env names but not values.
    eventually(T, "talker's definition", || {
        let def = b
            .eval("return document.querySelector('#logs-def').innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string();
        def.contains("echo tick $i")
            && def.contains("SIGINT to the process group, SIGKILL after 3s")
            && def.contains("SECRET_TOKEN")
    });
    let page = b.eval("return document.body.innerText;");
    assert!(
        !page.as_str().unwrap_or_default().contains("hunter2"),
        "an env value was shown"
    );
    b.screenshot("logs");
    b.eval("document.querySelector('#logs-def').scrollIntoView(); return 0;");
    b.screenshot("definition");

    // Instances: made through the form from a git repository and from a ZIP, then deleted.
    let repo = p.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("from-git.txt"), "git").unwrap();
    for args in [
        &["init", "-q"][..],
        &["-c", "user.email=t@t", "-c", "user.name=t", "add", "."],
        &[
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "one",
        ],
    ] {
        let st = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let zip = p.path().join("ws.zip");
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import zipfile; z = zipfile.ZipFile('{}', 'w'); z.writestr('from-zip.txt', 'zip'); z.close()",
            zip.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    b.goto(&format!("{base}/#instances"));
    let instance_states = || {
        b.eval("return [...document.querySelectorAll('#instances tr[data-instance]')].map(r => r.dataset.instance + '=' + r.dataset.state).join(' ');")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    b.click("input[name=src][value=git]");
    b.type_into("#src-git", &repo.display().to_string());
    b.click("button[aria-label='Create the instance']");
    eventually(Duration::from_secs(30), "the git instance ready", || {
        instance_states().contains("=ready")
    });
    b.click("input[name=src][value=zip]");
    b.type_into("#src-zip", &zip.display().to_string());
    b.click("button[aria-label='Create the instance']");
    eventually(Duration::from_secs(30), "both instances ready", || {
        instance_states().matches("=ready").count() == 2
    });
    b.screenshot("instances");
    let made: Vec<serde_json::Value> =
        serde_json::from_str(&p.http("GET", "/v1/instances").1).unwrap();
    let ws = |source: &str| {
        let i = made
            .iter()
            .find(|i| i["source"].as_str().unwrap_or_default().starts_with(source))
            .unwrap_or_else(|| panic!("no {source} instance: {made:?}"));
        (
            i["name"].as_str().unwrap().to_string(),
            std::path::PathBuf::from(i["workspace"].as_str().unwrap()),
        )
    };
    let (git_name, git_ws) = ws("git");
    let (_, zip_ws) = ws("upload");
    assert!(git_ws.join("from-git.txt").exists());
    assert!(zip_ws.join("from-zip.txt").exists());
    b.click(&format!("button[aria-label='Delete {git_name}']"));
    let asked = b.accept_alert();
    assert!(asked.contains(&git_name), "{asked}");
    eventually(T, "the instance gone", || {
        !instance_states().contains(&git_name) && !git_ws.exists()
    });

    // Processes: a command run from the page, its output shown.
    b.goto(&format!("{base}/#procs"));
    b.type_into("#proc-cmd", "echo from-the-page");
    b.click("button[aria-label='Run the command']");
    eventually(T, "the process's output", || {
        b.eval("return document.querySelector('#proc-output').innerText;")
            .as_str()
            .unwrap_or_default()
            .contains("from-the-page")
    });
    b.screenshot("procs");

    // Tasks: a pipeline run from the page, its verdicts filling in.
    b.goto(&format!("{base}/#tasks"));
    b.click("button[aria-label='Run the pipeline']");
    let verdicts = || {
        b.eval("return [...document.querySelectorAll('#run tr[data-task]')].map(r => r.dataset.task + '=' + r.dataset.verdict).sort().join(' ');")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually(T, "the verdicts", || verdicts() == "check=FAIL lint=PASS");
    eventually(T, "the run's end", || {
        b.eval("return document.querySelector('#run-summary').textContent;")
            .as_str()
            .unwrap_or_default()
            .contains("failed")
    });
    b.screenshot("tasks");

    // Events: the history, filtered by unit.
    b.goto(&format!("{base}/#events"));
    eventually(T, "the event history", || {
        b.eval("return document.querySelectorAll('#events tbody tr').length;")
            .as_u64()
            .unwrap_or(0)
            > 3
    });
    b.eval("const s = document.querySelector('#ev-unit'); s.value = 'worker'; s.dispatchEvent(new Event('change')); return 0;");
    let units_shown = b.eval(
        "return [...new Set([...document.querySelectorAll('#events tbody tr')].map(r => r.children[1].textContent))].join(',');",
    );
    assert_eq!(units_shown, "worker");
    b.screenshot("events");

    // A read-only session: the page shows, the actions do not.
    let ro = ok(&p, &["dashboard", "--no-open", "--read-only"])
        .trim()
        .to_string();
    b.goto(&ro);
    eventually(T, "the read-only page", || {
        shown_state(&b, "web") == "running"
    });
    let buttons = b.eval("return document.querySelectorAll('#units button.act').length;");
    assert_eq!(buttons, 0, "a read-only session shows actions");
    b.screenshot("read-only");

    let left = b.close();
    assert!(left.is_empty(), "the browser left {left:?}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
    // The daemon came back to this process (its subreaper, for the browser's sake): reaped.
    eventually(T, "no zombies of ours", || {
        crate::webdriver::reap();
        zombie_children(std::process::id() as i32).is_empty()
    });
}

/// What a browser does not show: the session cookie's flags, the CSRF check on changes made
/// through the cookie, and the link's token refused when wrong.
#[test]
fn dashboard_sessions_at_the_http_level() {
    let p = Project::new(STACK);
    ok(&p, &["up", "-d"]);
    let link = ok(&p, &["dashboard", "--no-open"]).trim().to_string();
    let hostport = link
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let path = link.split(&hostport).nth(1).unwrap().to_string();
    let raw = |req: String| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let resp = raw(format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 303"), "{resp}");
    let cookie_line = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {resp}"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(flag), "{cookie_line}");
    }
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Reading with the cookie works; a change needs our Origin.
    let get = raw(format!(
        "GET /v1/services HTTP/1.1\r\nHost: {hostport}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    ));
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    let post = |origin: &str| {
        raw(format!(
            "POST /v1/services/worker/stop HTTP/1.1\r\nHost: {hostport}\r\nCookie: {cookie}\r\n{origin}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ))
    };
    let none = post("");
    assert!(none.starts_with("HTTP/1.1 403"), "{none}");
    assert!(none.contains("bad_origin"), "{none}");
    let evil = post("Origin: http://evil.example\r\n");
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    let ours = post(&format!("Origin: http://{hostport}\r\n"));
    assert!(ours.starts_with("HTTP/1.1 200"), "{ours}");
    // A wrong token in the link: no session.
    let bad = raw(format!(
        "GET /login?token=nope HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    ));
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    assert!(!bad.to_ascii_lowercase().contains("set-cookie"), "{bad}");
    // The assets are cached for good under their hashed names.
    let page = raw(format!(
        "GET / HTTP/1.1\r\nHost: {hostport}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    ));
    let js = page
        .split("src=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no script in {page}"))
        .to_string();
    assert!(
        js.starts_with("/assets/app-") && js.ends_with(".js"),
        "{js}"
    );
    let asset = raw(format!(
        "GET {js} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    ));
    assert!(asset.starts_with("HTTP/1.1 200"), "{asset}");
    assert!(asset.contains("immutable"), "{asset}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}
