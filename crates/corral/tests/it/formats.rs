//! process-compose files and Procfiles run as they are (found by `corral up` with no
//! corral.toml), and `corral import` turns them into a corral.toml that runs the same.
//! Every file here is written for these tests.

use crate::harness::*;

/// The lines unit `unit` printed (the `name | ` prefix is padded to the longest name).
fn printed<'a>(out: &'a str, unit: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" | ").or_else(|| l.split_once(" ! "))?;
            (name.trim_end() == unit).then_some(rest)
        })
        .collect()
}

/// A project directory with these files and no corral.toml.
fn project(files: &[(&str, &str)]) -> Project {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("corral.toml")).unwrap();
    for (name, text) in files {
        std::fs::write(p.path().join(name), text).unwrap();
    }
    p
}

/// A stack that ends by itself: a diamond (setup → {api, cache} → report), every condition,
/// an exec probe gating a dependent, replicas, bash, `vars`, `.env` and `$$`.
const STACK: &str = r#"
version: "0.5"
environment:
  - "STAGE=${STAGE_FROM_DOTENV}"
vars:
  GREETING: hi
processes:
  setup:
    command: "echo setup {{.GREETING}} $$STAGE; touch ready.flag"
  api:
    command: "echo api up; [[ -n \"$$RANDOM\" ]] && echo bash-random; sleep 1.5"
    depends_on:
      setup:
        condition: process_completed_successfully
    readiness_probe:
      exec:
        command: "test -f ready.flag"
      period_seconds: 1
  cache:
    command: "echo cache listening; sleep 1.5"
    ready_log_line: "cache listening"
    depends_on:
      setup:
        condition: process_completed
  worker:
    command: "echo worker $$PC_REPLICA_NUM of $$PC_PROC_NAME"
    replicas: 2
    depends_on:
      api:
        condition: process_healthy
  report:
    command: "echo report done"
    depends_on:
      cache:
        condition: process_log_ready
      worker:
        condition: process_completed_successfully
      api:
        condition: process_started
  later:
    command: "echo never"
    disabled: true
    namespace: extra
"#;

#[test]
fn a_process_compose_file_runs_unchanged() {
    let p = project(&[
        ("process-compose.yaml", STACK),
        (".env", "STAGE_FROM_DOTENV=dev\n"),
    ]);
    let (status, out, err) = p.run(&["up"]);
    assert!(status.success(), "{out}{err}");
    // Which file, and what it could not carry, with lines.
    assert!(
        err.contains("process-compose.yaml (a process-compose file)"),
        "{err}"
    );
    assert!(err.contains("process `later` is disabled"), "{err}");
    assert!(err.contains("process-compose.yaml:40:3"), "{err}");
    let lines = corral_lines(&out);
    assert_eq!(printed(&out, "setup"), ["setup hi dev"], "{out}");
    assert!(
        printed(&out, "api").contains(&"bash-random"),
        "bash semantics: {out}"
    );
    assert_eq!(printed(&out, "worker-0"), ["worker 0 of worker"], "{out}");
    assert_eq!(printed(&out, "worker-1"), ["worker 1 of worker"], "{out}");
    assert!(!out.contains("never"), "a disabled process ran: {out}");
    // The diamond and its conditions, in order.
    assert!(position(&lines, "setup: exited") < position(&lines, "api: started"));
    assert!(position(&lines, "setup: exited") < position(&lines, "cache: started"));
    assert!(position(&lines, "api: ready") < position(&lines, "worker-0: started"));
    assert!(
        position(&lines, "cache: log_ready pattern matched") < position(&lines, "report: started")
    );
    assert!(position(&lines, "worker-1: exited") < position(&lines, "report: started"));
    p.assert_nothing_left();
}

/// A `process_log_ready` dependency on a process that ends without its line skips the
/// dependent, and `up` ends by itself with a failure; `on_failure` restarts up to
/// `max_restarts`.
#[test]
fn conditions_that_cannot_hold_skip_and_restarts_are_counted() {
    let p = project(&[(
        "process-compose.yml",
        r#"
processes:
  quiet:
    command: "echo something else"
    ready_log_line: "ready now"
  after:
    command: "echo should not run"
    depends_on:
      quiet:
        condition: process_log_ready
  flaky:
    command: "echo try; exit 3"
    availability:
      restart: on_failure
      max_restarts: 2
      backoff_seconds: 0
"#,
    )]);
    let (status, out, err) = p.run(&["up"]);
    assert!(!status.success(), "{out}{err}");
    assert!(!out.contains("should not run"), "{out}");
    assert!(out.contains("after: skipped"), "{out}");
    assert_eq!(printed(&out, "flaky"), ["try"; 3], "{out}");
    p.assert_nothing_left();
}

/// A YAML mistake names its line; a docker compose file (no `processes:`) is not taken for a
/// process-compose file.
#[test]
fn bad_yaml_names_its_line_and_docker_compose_is_not_ours() {
    let p = project(&[(
        "process-compose.yaml",
        "processes:\n  web:\n    command: \"echo hi\n  other: [\n",
    )]);
    let (status, _, err) = p.run(&["validate"]);
    assert!(!status.success());
    assert!(err.contains("process-compose.yaml:"), "{err}");
    assert!(err.contains("YAML"), "{err}");

    let p = project(&[(
        "process-compose.yaml",
        "processes:\n  web:\n    command: \"echo\"\n    depends_on:\n      nope:\n        condition: process_started\n",
    )]);
    let (status, _, err) = p.run(&["validate"]);
    assert!(!status.success());
    assert!(err.contains("process-compose.yaml:5:7"), "{err}");

    let p = project(&[("compose.yaml", "services:\n  db:\n    image: postgres\n")]);
    let (status, _, err) = p.run(&["validate"]);
    assert!(!status.success());
    assert!(err.contains("no `corral.toml`"), "{err}");
}

/// foreman's conventions: `PORT` from 5000 in steps of 100 by line, `PS=name.N`, `.env`,
/// comments and blank lines; a formation runs several of a type with consecutive ports.
#[test]
fn a_procfile_runs_with_ports_and_a_formation() {
    let p = project(&[
        (
            "Procfile",
            "# two types\nweb: echo \"web $PS $PORT $FROM_ENV\"\n\nworker: echo \"worker $PS $PORT\"\n",
        ),
        (".env", "FROM_ENV=dotenv\n"),
    ]);
    let (status, out, err) = p.run(&["up"]);
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("Procfile (a Procfile)"), "{err}");
    assert_eq!(printed(&out, "web"), ["web web.1 5000 dotenv"], "{out}");
    assert_eq!(printed(&out, "worker"), ["worker worker.1 5100"], "{out}");

    let (status, out, err) = p.run(&["up", "-m", "web=2,worker=0"]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(printed(&out, "web.1"), ["web web.1 5000 dotenv"], "{out}");
    assert_eq!(printed(&out, "web.2"), ["web web.2 5001 dotenv"], "{out}");
    assert!(!out.contains("worker"), "{out}");
    let (status, _, err) = p.run(&["up", "-m", "web"]);
    assert!(!status.success());
    assert!(err.contains("name=count"), "{err}");
    p.assert_nothing_left();
}

/// `corral import` writes a corral.toml that validates and runs the same stack; it does not
/// overwrite one without `--force`.
#[test]
fn import_writes_a_corral_toml_that_runs_the_same() {
    let p = project(&[
        ("process-compose.yaml", STACK),
        (".env", "STAGE_FROM_DOTENV=dev\n"),
    ]);
    let (status, original, err) = p.run(&["up"]);
    assert!(status.success(), "{original}{err}");
    let (status, _, err) = p.run(&["import", "process-compose.yaml"]);
    assert!(status.success(), "{err}");
    assert!(err.contains("wrote"), "{err}");
    let toml = p.read("corral.toml");
    assert!(toml.contains("# Not carried over:"), "{toml}");
    assert!(toml.contains("process-compose.yaml:40:3"), "{toml}");
    // corral.toml comes first now.
    let (status, out, err) = p.run(&["validate"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("corral.toml: ok (6 services"), "{out}");
    let (status, imported, err) = p.run(&["up"]);
    assert!(status.success(), "{imported}{err}");
    let outputs = |s: &str| {
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| !l.starts_with("corral ") && !l.contains("bash-random"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(outputs(&original), outputs(&imported));
    let (status, _, err) = p.run(&["import", "process-compose.yaml"]);
    assert!(!status.success());
    assert!(err.contains("--force"), "{err}");
    let (status, _, err) = p.run(&["import", "process-compose.yaml", "--force"]);
    assert!(status.success(), "{err}");
    p.assert_nothing_left();
}
