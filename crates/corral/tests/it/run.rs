//! `corral run`: pipelines in waves, skip dependents of failures, allow_failure, sequential.

use crate::harness::*;

const PIPELINE: &str = r#"
[tasks.lint]
command = "echo linting; exit 1"
allow_failure = true

[tasks.build]
command = "sleep 0.2; echo built > artifact"

[tasks.test]
command = "test -f artifact && echo tests pass && exit 4"
depends_on = ["build", "lint"]

[tasks.deploy]
command = "echo deploying"
depends_on = ["test"]

[tasks.docs]
command = "echo docs"
depends_on = ["build"]
"#;

#[test]
fn a_pipeline_with_a_failure_skips_its_dependents() {
    let p = Project::new(PIPELINE);
    let (status, out, _) = p.run(&["run"]);
    assert_eq!(status.code(), Some(1), "{out}");
    let summary: Vec<&str> = out.lines().skip_while(|l| !l.trim().is_empty()).collect();
    let find = |name: &str| {
        summary
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no summary row for {name}:\n{out}"))
            .to_string()
    };
    assert!(
        find("lint").trim_start().starts_with("ALLOWED"),
        "{}",
        find("lint")
    );
    assert!(find("build").trim_start().starts_with("PASS"));
    assert!(find("test").contains("FAIL") && find("test").contains("exit code 4"));
    assert!(
        find("deploy").contains("SKIP") && find("deploy").contains("`test` ended with exit code 4")
    );
    assert!(find("docs").trim_start().starts_with("PASS"));
    assert!(
        out.contains("5 tasks: 3 passed, 1 failed, 1 skipped in"),
        "{out}"
    );
    // lint and build ran in the first wave, together.
    let lines = corral_lines(&out);
    assert!(position(&lines, "build: started") < position(&lines, "lint: exited"));
}

#[test]
fn naming_tasks_runs_them_with_their_dependencies_only() {
    let p = Project::new(PIPELINE);
    let (status, out, _) = p.run(&["run", "docs"]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("2 tasks: 2 passed, 0 failed, 0 skipped"),
        "{out}"
    );
    assert!(!out.contains("linting"));
}

#[test]
fn sequential_runs_one_at_a_time_and_stops_at_the_first_failure() {
    let p = Project::new(
        r#"
[tasks.one]
command = "echo one"
[tasks.two]
command = "echo two; exit 1"
[tasks.three]
command = "echo three"
"#,
    );
    let (status, out, _) = p.run(&["run", "--sequential"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains("3 tasks: 1 passed, 1 failed, 1 skipped"),
        "{out}"
    );
    assert!(!out.contains("three | three"), "{out}");
    let lines = corral_lines(&out);
    assert!(position(&lines, "one: exited") < position(&lines, "two: started"));
}

#[test]
fn tasks_can_need_services_which_are_stopped_afterwards() {
    let p = Project::new(
        r#"
[services.server]
command = ["python3", "tcp_server.py"]
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "50ms" }

[tasks.check]
command = "echo checked"
depends_on = { server = "healthy" }
"#,
    );
    let (status, out, _) = p.run(&["run", "check"]);
    assert!(status.success(), "{out}");
    assert!(out.contains("server: stopped"), "{out}");
}

#[test]
fn run_refuses_a_service_name() {
    let p = Project::new("[services.s]\ncommand = 'true'\n[tasks.t]\ncommand = 'true'\n");
    let (status, _, err) = p.run(&["run", "s"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("`s` is a service, not a task; use `corral up s` for it"),
        "{err}"
    );
}

const API_PIPELINE: &str = r#"
[services.db]
command = ["sleep", "1000"]

[tasks.build]
command = "echo building"
depends_on = ["db"]

[tasks.test]
command = "echo testing; exit 1"
depends_on = ["build"]

[tasks.lint]
command = "exit 2"
allow_failure = true

[tasks.deploy]
command = "echo deploying"
depends_on = ["test"]

[tasks.docs]
command = "sleep 0.3"
depends_on = ["build"]
"#;

fn verdicts(run: &serde_json::Value) -> Vec<(String, String)> {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn pipelines_run_over_the_api_with_a_result_per_task() {
    let p = Project::new(API_PIPELINE);
    let (status, out, err) = p.run_client(&["up", "-d", "db"]);
    assert!(status.success(), "{out}{err}");
    let (status, body) = p.http_body("POST", "/v1/runs?wait=true", "{}");
    assert_eq!(status, 201, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["state"], "failed");
    let mut got = verdicts(&run);
    got.sort();
    let want = [
        ("build", "PASS"),
        ("deploy", "SKIP"),
        ("docs", "PASS"),
        ("lint", "ALLOWED"),
        ("test", "FAIL"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let id = run["id"].as_u64().unwrap();
    let (status, again) = p.http("GET", &format!("/v1/runs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap()["state"],
        "failed"
    );

    // `corral run` goes through the running corral, and runs the tasks again.
    let (status, out, err) = p.run_client(&["run", "docs"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("ran in the running corral"), "{out}");
    assert!(
        out.contains("PASS  build") && out.contains("PASS  docs"),
        "{out}"
    );
    assert_eq!(
        p.read(".corral/logs/build.log").matches("building").count(),
        2
    );

    // One pipeline at a time.
    let (status, body) = p.http_body("POST", "/v1/runs", r#"{"tasks": ["docs"]}"#);
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let (status, body) = p.http_body("POST", "/v1/runs", r#"{"tasks": ["docs"]}"#);
    assert_eq!(status, 409, "{body}");
    let (status, body) = p.http("GET", &format!("/v1/runs/{id}?wait=true"));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"],
        "passed"
    );

    // Sequential: the first required failure skips what has not started.
    let (status, body) = p.http_body(
        "POST",
        "/v1/runs?wait=true",
        r#"{"tasks": ["test", "lint"], "sequential": true}"#,
    );
    assert_eq!(status, 201, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["sequential"], true);
    let got = verdicts(&run);
    assert!(got.contains(&("test".into(), "FAIL".into())), "{got:?}");
    assert!(got.contains(&("lint".into(), "SKIP".into())), "{got:?}");

    for (body, status) in [
        (r#"{"tasks": ["db"]}"#, 400),
        (r#"{"tasks": ["nope"]}"#, 404),
        (r#"{"tasks": "build"}"#, 400),
        (r#"{"task": ["build"]}"#, 400),
    ] {
        let (got, answer) = p.http_body("POST", "/v1/runs", body);
        assert_eq!(got, status, "{body}: {answer}");
    }
    assert_eq!(p.http("GET", "/v1/runs/999").0, 404);
    assert_eq!(p.http("GET", "/v1/runs/abc").0, 404);
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

/// `run --json`: the summary as the API's run (and nothing else on stdout), exit 1 on a failure.
#[test]
fn run_json_is_the_summary_alone() {
    let p = Project::new("[tasks.a]\ncommand = \"echo hi\"\n\n[tasks.b]\ncommand = \"exit 3\"\n");
    let (status, out, err) = p.run(&["run", "--json"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["tasks"][1]["verdict"], "FAIL");
    assert_eq!(v["tasks"][1]["detail"], "exit code 3");
}
