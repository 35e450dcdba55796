//! Completion tickets: `start`/`stop`/`restart --wait` (and `?wait=true`) answer with the
//! outcome — up and ready, down, or why it cannot get there — not with where the unit is now.

use crate::harness::*;

const STACK: &str = r#"
[services.api]
command = ["python3", "tcp_server.py", "0.6"]
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "100ms" }

[services.never]
command = "exec sleep 1000"
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "100ms" }

[services.broken]
command = ["./no-such-program"]

[tasks.failing]
command = "exit 3"

[tasks.build]
command = "echo built"
"#;

fn service(p: &Project, name: &str) -> serde_json::Value {
    let (status, body) = p.http("GET", &format!("/v1/services/{name}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn wait_answers_with_the_outcome() {
    let p = Project::new(STACK);
    let (status, out, err) = p.run_client(&["up", "-d", "build"]);
    assert!(status.success(), "{out}{err}");

    // Up: answered only once running and ready (the server listens after 0.6 s).
    let (status, out, err) = p.run_client(&["start", "api", "--wait"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("api: running"), "{out}");
    let api = service(&p, "api");
    assert!(is_up(&api), "answered before ready: {api}");
    let first = api["pid"].as_u64().unwrap();

    // Restart: a new process, ready, before the answer.
    let (status, out, err) = p.run_client(&["restart", "api", "--wait"]);
    assert!(status.success(), "{out}{err}");
    let api = service(&p, "api");
    assert!(is_up(&api), "{api}");
    assert_ne!(api["pid"].as_u64(), Some(first), "{api}");

    // Down: the process is gone when the answer comes.
    let pid = api["pid"].as_u64().unwrap() as i32;
    let (status, out, err) = p.run_client(&["stop", "api", "--wait"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("api: inactive"), "{out}");
    assert!(is_dead(pid), "pid {pid} still alive after stop --wait");

    // A task: up means completed successfully.
    let (status, out, err) = p.run_client(&["start", "build", "--wait"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("build: completed (exit code 0)"), "{out}");

    // Cannot get there: non-zero, saying why; the API answers 409 with the same reason.
    let (status, out, err) = p.run_client(&["start", "failing", "--wait"]);
    assert!(!status.success(), "{out}");
    assert!(err.contains("failing exited (exit code 3)"), "{err}");
    let (status, out, err) = p.run_client(&["start", "broken", "--wait"]);
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("broken failed:") && err.contains("no-such-program"),
        "{err}"
    );
    let (code, body) = p.http("POST", "/v1/services/broken/restart?wait=true");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("\"code\":\"unsuccessful\""), "{body}");

    // Never ready: the timeout says where it is.
    let (status, _, err) = p.run_client(&["start", "never", "--wait", "--timeout", "400ms"]);
    assert!(!status.success());
    assert!(
        err.contains("did not get there within 400ms") && err.contains("running (not ready)"),
        "{err}"
    );
    let (code, body) = p.http("POST", "/v1/services/never/stop?wait=true&timeout=forever");
    assert_eq!(code, 400, "{body}");
    // Without --wait: answered at once with the state now.
    let (status, out, _) = p.run_client(&["stop", "never"]);
    assert!(status.success() && out.contains("never: stopping"), "{out}");

    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}
