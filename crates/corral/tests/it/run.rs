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
