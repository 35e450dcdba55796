//! Templates and instances, DevBox-style: a stand-in IDE server per instance with its own port
//! and workspace (empty, ZIP, git), a setup step, health, metrics, a daemon crash, deletion.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const IDE: &str = r#"
# A stand-in for an IDE server: GET /healthz -> {"status":"alive"}; GET /ls -> workspace files.
import http.server, json, os, sys
port, root = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = json.dumps({"status": "alive"}).encode()
        elif self.path == "/ls":
            body = json.dumps(sorted(os.listdir(root))).encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn config(lo: u16) -> String {
    format!(
        r#"
[templates.ide]
command = ["python3", "ide.py", "{{port}}", "{{workspace}}"]
readiness = {{ http = "http://127.0.0.1:{{port}}/healthz", interval = "50ms" }}
params = {{ theme = "dark", ext = "none" }}
setup = ["echo installed {{ext}} >> installed.txt"]
files = {{ "settings.json" = '{{"theme": "{{theme}}"}}' }}
port_range = [{lo}, {hi}]
"#,
        hi = lo + 2
    )
}

fn get(port: u64, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn json(p: &Project, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = p.http_body(method, path, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
    )
}

/// Run `program -c script` in `dir`; it must succeed.
fn run_ok(dir: &Path, program: &str, script: &str) {
    let out = std::process::Command::new(program)
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(dir: &Path, script: &str) {
    run_ok(dir, "sh", script);
}

/// A ZIP made by Python's zipfile: `entries` is Python code adding to `z`.
fn make_zip(dir: &Path, name: &str, entries: &str) -> Vec<u8> {
    let script =
        format!("import zipfile\nz = zipfile.ZipFile('{name}', 'w')\n{entries}\nz.close()\n");
    run_ok(dir, "python3", &script);
    std::fs::read(dir.join(name)).unwrap()
}

/// Upload raw bytes with a PUT over the API socket.
fn put(p: &Project, path: &str, body: &[u8]) -> (u16, String) {
    let sock = p.path().join(".corral/api.sock");
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    parse_http(&resp)
}

fn wait_instance(p: &Project, name: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = json(p, "GET", &format!("/v1/instances/{name}"), "");
        if v["state"] == state {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not {state}: {v:#} (was {last})"
        );
        last = v;
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn service_state(p: &Project, name: &str) -> serde_json::Value {
    json(p, "GET", &format!("/v1/services/{name}"), "").1
}

#[test]
fn devbox_instances_from_empty_zip_and_git_workspaces() {
    let lo = free_range();
    let p = Project::new(&config(lo));
    std::fs::write(p.path().join("ide.py"), IDE).unwrap();
    // A local bare repository with one commit.
    let scratch = p.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    sh(
        &scratch,
        "git init -q work && cd work && echo from-git > README.md && git add . && git -c user.name=t -c user.email=t@t commit -qm init && cd .. && git clone -q --bare work repo.git",
    );
    let zip = make_zip(
        &scratch,
        "ws.zip",
        "z.writestr('hello.txt', 'from-zip')\nz.writestr('src/main.py', 'print(1)')",
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");

    let (status, v) = json(&p, "GET", "/v1/templates", "");
    assert_eq!(status, 200);
    assert_eq!(v[0]["name"], "ide");

    let (status, a) = json(
        &p,
        "POST",
        "/v1/instances",
        r#"{"template": "ide", "params": {"theme": "light", "ext": "python"}}"#,
    );
    assert_eq!(status, 201, "{a}");
    let (status, b) = json(
        &p,
        "POST",
        "/v1/instances",
        r#"{"template": "ide", "upload": true}"#,
    );
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["state"], "awaiting_upload");
    let (status, body) = put(
        &p,
        &format!("/v1/instances/{}/workspace", b["name"].as_str().unwrap()),
        &zip,
    );
    assert_eq!(status, 200, "{body}");
    let git = format!(
        r#"{{"template": "ide", "git": "{}"}}"#,
        scratch.join("repo.git").display()
    );
    let (status, c) = json(&p, "POST", "/v1/instances", &git);
    assert_eq!(status, 201, "{c}");
    let names: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let ports: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|i| i["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [lo as u64, lo as u64 + 1, lo as u64 + 2]);

    // The range is used up: a fourth is refused, saying so.
    let (status, v) = json(&p, "POST", "/v1/instances", r#"{"template": "ide"}"#);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("no free port left"),
        "{v}"
    );

    let mut pids = Vec::new();
    for (name, port) in names.iter().zip(&ports) {
        let inst = wait_instance(&p, name, "ready");
        assert!(
            inst["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "done"),
            "{inst:#}"
        );
        eventually(Duration::from_secs(20), &format!("{name} healthy"), || {
            is_up(&service_state(&p, name))
        });
        assert_eq!(get(*port, "/healthz"), r#"{"status": "alive"}"#);
        pids.push(service_state(&p, name)["pid"].as_u64().unwrap());
    }
    let ws = |name: &str| {
        p.path()
            .join(".corral/instances")
            .join(name)
            .join("workspace")
    };
    assert_eq!(
        std::fs::read_to_string(ws(&names[0]).join("settings.json")).unwrap(),
        r#"{"theme": "light"}"#
    );
    assert_eq!(
        std::fs::read_to_string(ws(&names[0]).join("installed.txt")).unwrap(),
        "installed python\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws(&names[1]).join("hello.txt")).unwrap(),
        "from-zip"
    );
    assert_eq!(
        std::fs::read_to_string(ws(&names[2]).join("README.md")).unwrap(),
        "from-git\n"
    );
    assert!(get(ports[1], "/ls").contains("src"));

    // Metrics include them.
    let (_, metrics) = p.http("GET", "/metrics");
    for name in &names {
        assert!(
            metrics.contains(&format!("corral_service_rss_bytes{{service=\"{name}\"}}")),
            "{metrics}"
        );
    }

    // The daemon dies; the new one adopts them, and setup does not run again.
    p.kill_daemon();
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    for (name, pid) in names.iter().zip(&pids) {
        eventually(Duration::from_secs(20), &format!("{name} adopted"), || {
            let s = service_state(&p, name);
            s["pid"].as_u64() == Some(*pid) && s["adopted"] == true
        });
        assert_eq!(wait_instance(&p, name, "ready")["name"], name.as_str());
    }
    assert_eq!(
        std::fs::read_to_string(ws(&names[0]).join("installed.txt")).unwrap(),
        "installed python\n"
    );

    // Deleting removes the process, the workspace, the logs (rotated ones too) and the record.
    let log = |name: &str, suffix: &str| p.path().join(format!(".corral/logs/{name}.log{suffix}"));
    for suffix in [".1", ".2"] {
        std::fs::write(log(&names[0], suffix), "rotated\n").unwrap();
    }
    for name in &names {
        let (status, v) = json(&p, "DELETE", &format!("/v1/instances/{name}"), "");
        assert_eq!(status, 200, "{v}");
        assert!(!p.path().join(".corral/instances").join(name).exists());
        for suffix in ["", ".1", ".2"] {
            assert!(!log(name, suffix).exists(), "{name}.log{suffix}");
        }
        assert_eq!(p.http("GET", &format!("/v1/instances/{name}")).0, 404);
        assert_eq!(p.http("GET", &format!("/v1/services/{name}")).0, 404);
    }
    for pid in &pids {
        eventually(Duration::from_secs(5), "instance process gone", || {
            is_dead(*pid as i32)
        });
    }
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

#[test]
fn bad_instances_are_refused_or_fail_cleanly() {
    let lo = free_range();
    let p = Project::new(&config(lo));
    std::fs::write(p.path().join("ide.py"), IDE).unwrap();
    let scratch = p.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");

    for (body, status, needle) in [
        (r#"{"template": "idee"}"#, 404, "did you mean `ide`"),
        (
            r#"{"template": "ide", "params": {"colour": "x"}}"#,
            400,
            "no parameter `colour`",
        ),
        (
            r#"{"template": "ide", "git": "x", "upload": true}"#,
            400,
            "one of",
        ),
        (
            r#"{"template": "ide", "git": "--upload-pack=evil"}"#,
            400,
            "not a repository URL",
        ),
        (r#"{"tmpl": "ide"}"#, 400, "template"),
    ] {
        let (got, v) = json(&p, "POST", "/v1/instances", body);
        assert_eq!(got, status, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }

    // A clone that fails: the instance is failed, and no directory is left.
    let (_, v) = json(
        &p,
        "POST",
        "/v1/instances",
        r#"{"template": "ide", "git": "/nonexistent/repo.git"}"#,
    );
    let name = v["name"].as_str().unwrap().to_string();
    let v = wait_instance(&p, &name, "failed");
    assert!(v["error"].as_str().unwrap().contains("git clone"), "{v}");
    assert!(
        !p.path()
            .join(".corral/instances")
            .join(&name)
            .join("workspace")
            .exists()
    );
    let (status, _) = json(&p, "DELETE", &format!("/v1/instances/{name}"), "");
    assert_eq!(status, 200);

    // ZIPs that escape: refused, nothing written outside (or inside).
    for (label, entries) in [
        (
            "dotdot",
            "z.writestr('ok.txt', 'x')\nz.writestr('../evil.txt', 'evil')",
        ),
        ("absolute", "z.writestr('/tmp/corral-evil-abs.txt', 'evil')"),
        (
            "symlink",
            "i = zipfile.ZipInfo('link')\ni.external_attr = 0o120777 << 16\nz.writestr(i, '/etc')",
        ),
    ] {
        let zip = make_zip(&scratch, &format!("{label}.zip"), entries);
        let (_, v) = json(
            &p,
            "POST",
            "/v1/instances",
            r#"{"template": "ide", "upload": true}"#,
        );
        let name = v["name"].as_str().unwrap().to_string();
        let (status, body) = put(&p, &format!("/v1/instances/{name}/workspace"), &zip);
        assert_eq!(status, 200, "{body}");
        let v = wait_instance(&p, &name, "failed");
        let err = v["error"].as_str().unwrap();
        assert!(
            err.contains("outside the workspace") || err.contains("symbolic link"),
            "{label}: {err}"
        );
        let home = p.path().join(".corral/instances").join(&name);
        assert!(!home.join("workspace").exists(), "{label}");
        assert!(
            !home.join("evil.txt").exists() && !Path::new("/tmp/corral-evil-abs.txt").exists(),
            "{label}"
        );
        // A second upload is refused: it is not waiting for one.
        assert_eq!(
            put(&p, &format!("/v1/instances/{name}/workspace"), &zip).0,
            409
        );
        assert_eq!(
            json(&p, "DELETE", &format!("/v1/instances/{name}"), "").0,
            200
        );
    }
    assert_eq!(put(&p, "/v1/instances/nope/workspace", b"x").0, 404);
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

#[test]
fn setup_steps_time_out_and_leave_nothing_running() {
    let p = Project::new(
        r#"
[templates.slow]
command = ["sleep", "1000"]
setup = ["sleep 1000"]
setup_timeout = "300ms"

[templates.leaky]
command = ["sleep", "1000"]
setup = ["sleep 1000 & echo $! > leaked.pid"]

[templates.stuck]
command = ["sleep", "1000"]
setup = ["echo $$ > started.txt; exec sleep 1000"]
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");

    // A step that hangs fails the instance at its timeout, instead of hanging it forever.
    let (status, slow) = json(&p, "POST", "/v1/instances", r#"{"template": "slow"}"#);
    assert_eq!(status, 201, "{slow}");
    let name = slow["name"].as_str().unwrap();
    let failed = wait_instance(&p, name, "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("took longer than 300ms") && error.contains("setup_timeout"),
        "{failed:#}"
    );
    // Its hanging step was killed: nothing of the project runs `sleep` now.
    eventually(
        Duration::from_secs(5),
        "the hanging step to be killed",
        || p.processes().iter().all(|(_, cmd)| !cmd.contains("sleep")),
    );

    // What a step starts in the background does not outlive it.
    let (status, leaky) = json(&p, "POST", "/v1/instances", r#"{"template": "leaky"}"#);
    assert_eq!(status, 201, "{leaky}");
    let name = leaky["name"].as_str().unwrap();
    let ready = wait_instance(&p, name, "ready");
    let ws = ready["workspace"].as_str().unwrap();
    let leaked: i32 = std::fs::read_to_string(Path::new(ws).join("leaked.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(5), "the leaked sleep to die", || {
        is_dead(leaked)
    });

    // A preparing instance can be deleted: its preparation is cancelled, its step killed.
    let (status, stuck) = json(&p, "POST", "/v1/instances", r#"{"template": "stuck"}"#);
    assert_eq!(status, 201, "{stuck}");
    let name = stuck["name"].as_str().unwrap().to_string();
    let ws = std::path::PathBuf::from(stuck["workspace"].as_str().unwrap());
    eventually(Duration::from_secs(10), "the setup step to start", || {
        std::fs::read_to_string(ws.join("started.txt")).is_ok_and(|t| t.ends_with('\n'))
    });
    let step: i32 = std::fs::read_to_string(ws.join("started.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (status, body) = json(&p, "DELETE", &format!("/v1/instances/{name}"), "");
    assert_eq!(status, 200, "{body}");
    let (status, _) = json(&p, "GET", &format!("/v1/instances/{name}"), "");
    assert_eq!(status, 404);
    assert!(!ws.exists(), "its workspace is deleted");
    eventually(
        Duration::from_secs(5),
        "the setup step to be killed",
        || is_dead(step),
    );

    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

/// `instance create --wait`: a line per setup step, then ready (exit 0); a failing step makes
/// it exit 1 saying why.
#[test]
fn create_wait_reports_each_setup_step_and_fails_with_the_preparation() {
    let p = Project::new(
        r#"
[templates.good]
command = ["sleep", "30"]
setup = ["echo fetching", "sleep 0.2"]

[templates.bad]
command = ["sleep", "30"]
setup = ["echo about to fail; exit 4"]
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let (status, out, err) = p.run_client(&["instance", "create", "good", "--wait"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("[2/3] sh -c echo fetching: done")
            && out.contains("[3/3] sh -c sleep 0.2: done"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap_or("").ends_with(": ready"),
        "{out}"
    );
    // A mistyped name gets the closest one.
    let name = out.split_whitespace().next().unwrap().to_string();
    let (status, _, err) = p.run_client(&["instance", "show", &format!("{name}x")]);
    assert!(!status.success());
    assert!(err.contains(&format!("did you mean `{name}`")), "{err}");
    let (status, out, err) = p.run_client(&["instance", "create", "bad", "--wait"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("preparation failed"), "{err}");
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// Instances created and deleted in any order (each a unit more or fewer in the running
/// project): the others keep their processes and stay reachable by name — a restart of one whose
/// place moved down reaches it — and nothing is left at the end.
#[test]
fn instances_deleted_from_the_middle_leave_the_others_as_they_were() {
    let p = Project::new(
        "[services.base]\ncommand = [\"sleep\", \"1000\"]\n[templates.t]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let create = || {
        let (status, v) = json(&p, "POST", "/v1/instances", r#"{"template": "t"}"#);
        assert_eq!(status, 201, "{v}");
        v["name"].as_str().unwrap().to_string()
    };
    let pid_of = |name: &str| -> Option<u64> {
        let s = service_state(&p, name);
        (s["state"] == "running")
            .then(|| s["pid"].as_u64())
            .flatten()
    };
    let running = |names: &[String]| -> Vec<u64> {
        let mut pids = Vec::new();
        eventually(Duration::from_secs(20), "the instances to run", || {
            pids = names.iter().filter_map(|n| pid_of(n)).collect();
            pids.len() == names.len()
        });
        pids
    };
    let names: Vec<String> = (0..12).map(|_| create()).collect();
    let pids = running(&names);
    // Every third deleted, from the first on: each deletion moves the ones after it down.
    let (gone, kept): (Vec<_>, Vec<_>) = names
        .iter()
        .zip(&pids)
        .enumerate()
        .partition(|(i, _)| i % 3 == 0);
    for (_, (name, _)) in &gone {
        let (status, v) = json(&p, "DELETE", &format!("/v1/instances/{name}"), "");
        assert_eq!(status, 200, "{v}");
    }
    for (_, (name, pid)) in &gone {
        assert_eq!(p.http("GET", &format!("/v1/services/{name}")).0, 404);
        eventually(
            Duration::from_secs(5),
            "a deleted instance's process to end",
            || is_dead(**pid as i32),
        );
    }
    // The others: the same processes, under their names.
    for (_, (name, pid)) in &kept {
        assert_eq!(pid_of(name), Some(**pid), "{name} kept its process");
    }
    // A restart reaches the one named (its place moved down by three), and only it.
    let (last, last_pid) = kept.last().map(|(_, (n, p))| ((*n).clone(), **p)).unwrap();
    let (status, v) = json(
        &p,
        "POST",
        &format!("/v1/services/{last}/restart?wait=true"),
        "",
    );
    assert_eq!(status, 200, "{v}");
    let new_pid = pid_of(&last).unwrap();
    assert_ne!(new_pid, last_pid);
    assert!(is_dead(last_pid as i32));
    for (_, (name, pid)) in &kept[..kept.len() - 1] {
        assert_eq!(
            pid_of(name),
            Some(**pid),
            "{name} untouched by another's restart"
        );
    }
    // More come after the deletions, and run beside them.
    let more: Vec<String> = (0..3).map(|_| create()).collect();
    running(&more);
    assert!(pid_of("base").is_some());
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}
