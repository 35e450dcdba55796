//! process-compose files and Procfiles run as they are (found by `corral up` with no
//! corral.toml), and `corral import` turns them into a corral.toml that runs the same.
//! Every file here is written for these tests.

use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

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
    log_location: "logs/worker-{PC_REPLICA_NUM}.log"
    depends_on:
      api:
        condition: process_healthy
  report:
    command: "echo report done $$PC_REPLICA_NUM"
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
    readiness_probe:
      exec:
        command: "true"
        working_dir: /tmp
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
    assert!(
        err.contains("a probe's `working_dir` is not supported"),
        "{err}"
    );
    assert!(err.contains("process-compose.yaml:48:22"), "{err}");
    let lines = corral_lines(&out);
    assert_eq!(printed(&out, "setup"), ["setup hi dev"], "{out}");
    // Without `replicas` a process is replica 0.
    assert_eq!(printed(&out, "report"), ["report done 0"], "{out}");
    assert!(
        printed(&out, "api").contains(&"bash-random"),
        "bash semantics: {out}"
    );
    assert_eq!(printed(&out, "worker-0"), ["worker 0 of worker"], "{out}");
    assert_eq!(printed(&out, "worker-1"), ["worker 1 of worker"], "{out}");
    // `log_location`: each replica's log in its own file, and only there.
    assert!(
        p.read("logs/worker-1.log")
            .ends_with(" out worker 1 of worker\n")
    );
    assert!(!p.path().join(".corral/logs/worker-1.log").exists());
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
    assert!(toml.contains("process-compose.yaml:48:22"), "{toml}");
    assert!(
        toml.contains("log_file = \"logs/worker-{replica}.log\""),
        "{toml}"
    );
    // corral.toml comes first now.
    let (status, out, err) = p.run(&["validate"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("corral.toml: ok (7 services"), "{out}");
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

/// process-compose's `exit_on_failure` ends the whole project with a failure, `exit_on_end`
/// with the process; `shutdown.command` runs instead of the stop signal.
#[test]
fn exit_on_failure_and_shutdown_command_from_process_compose() {
    let p = project(&[(
        "process-compose.yaml",
        r#"
processes:
  server:
    command: "trap 'echo got TERM; exit 0' TERM; echo serving; while true; do sleep 0.1; done"
    shutdown:
      command: "echo asked to stop; kill -TERM $$CORRAL_PID"
      timeout_seconds: 5
  job:
    command: "sleep 0.5; exit 4"
    availability:
      restart: exit_on_failure
    depends_on:
      server:
        condition: process_started
"#,
    )]);
    let ends = project(&[(
        "process-compose.yaml",
        r#"
processes:
  server:
    command: "exec sleep 30"
  once:
    command: "sleep 0.3; echo done"
    availability:
      exit_on_end: true
"#,
    )]);
    let (status, out, err) = ends.run(&["up"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("exit_on_end: stopping everything"), "{out}");
    ends.assert_nothing_left();
    let (status, out, err) = p.run(&["up"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let lines = corral_lines(&out);
    assert!(position(&lines, "job: exited (exit code 4") < position(&lines, "server: stopping"));
    assert!(
        out.contains("server: shutdown_command: asked to stop"),
        "{out}"
    );
    assert_eq!(printed(&out, "server"), ["serving", "got TERM"], "{out}");
    assert!(err.contains("ended with failures: job"), "{err}");
    p.assert_nothing_left();
}

/// What those formats say, corral.toml says too: `replicas` (`{replica}`, `CORRAL_REPLICA`,
/// dependents wait for all), `shell`, `disabled`, `namespace` (`up --namespace`),
/// `exit_on_failure`, `shutdown_command`.
#[test]
fn the_same_power_in_corral_toml() {
    let p = Project::new(
        r#"
shell = "bash"

[services.web]
command = "echo web {replica} $CORRAL_REPLICA; [[ 1 == 1 ]] && echo bash; exec sleep 30"
replicas = 2
namespace = "front"
ports = ["auto"]
shutdown_command = ["sh", "-c", "echo bye $CORRAL_PID; kill $CORRAL_PID"]

[services.extra]
command = "sleep 30"
disabled = true

[services.after]
command = "echo after; exec sleep 30"
depends_on = ["web"]

[services.job]
command = "sleep 1; exit 4"
restart = "never"
exit_on_failure = true
"#,
    );
    let (status, out, err) = p.run(&["up"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert_eq!(printed(&out, "web-0"), ["web 0 0", "bash"], "{out}");
    assert_eq!(printed(&out, "web-1"), ["web 1 1", "bash"], "{out}");
    assert!(
        !out.contains("extra: started"),
        "a disabled unit started: {out}"
    );
    let lines = corral_lines(&out);
    assert!(position(&lines, "web-0: started") < position(&lines, "after: started"));
    assert!(position(&lines, "web-1: started") < position(&lines, "after: started"));
    assert!(position(&lines, "job: exited (exit code 4") < position(&lines, "after: stopping"));
    assert!(
        out.contains("exit_on_failure: stopping everything"),
        "{out}"
    );
    assert!(out.contains("web-0: shutdown_command: bye"), "{out}");
    assert!(out.contains("web-1: shutdown_command: bye"), "{out}");

    // A namespace, in the background: only its units run.
    let (status, _, err) = p.run_client(&["up", "-d", "--namespace", "nope"]);
    assert!(!status.success());
    assert!(err.contains("namespaces: front"), "{err}");
    ok_run(&p, &["up", "-d", "--namespace", "front"]);
    let ps = ok_run(&p, &["ps"]);
    assert!(ps.contains("web-0") && ps.contains("web-1"), "{ps}");
    let running = |name: &str| {
        ps.lines()
            .any(|l| l.starts_with(name) && l.contains("running"))
    };
    assert!(running("web-0") && running("web-1"), "{ps}");
    assert!(
        !running("after") && !running("job") && !running("extra"),
        "{ps}"
    );
    // `start` starts a disabled unit.
    ok_run(&p, &["start", "extra", "--wait"]);
    ok_run(&p, &["down"]);
    p.assert_nothing_left();
}

fn ok_run(p: &Project, args: &[&str]) -> String {
    let (status, out, err) = p.run_client(args);
    assert!(status.success(), "corral {args:?}: {out}{err}");
    out
}

/// Several `-f`: each later file is read over the ones before (process-compose's override
/// files); an error in one names that file and its line; the daemon (and `reload`) read them
/// the same way.
#[test]
fn override_files_merge_key_by_key() {
    let p = project(&[
        (
            "process-compose.yaml",
            "processes:\n  web:\n    command: \"echo base web\"\n    environment:\n      - \"MODE=base\"\n  db:\n    command: \"echo db $$MODE\"\n    environment:\n      - \"MODE=base\"\n",
        ),
        (
            "process-compose.override.yaml",
            "processes:\n  web:\n    command: \"echo override web\"\n  extra:\n    command: \"echo extra\"\n",
        ),
        (
            "broken.override.yaml",
            "processes:\n  web:\n    depends_on:\n      nope:\n        condition: process_started\n",
        ),
    ]);
    let (status, out, err) = p.run(&[
        "-f",
        "process-compose.yaml",
        "-f",
        "process-compose.override.yaml",
        "up",
    ]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(printed(&out, "web"), ["override web"], "{out}");
    assert_eq!(printed(&out, "db"), ["db base"], "{out}");
    assert_eq!(printed(&out, "extra"), ["extra"], "{out}");

    let (status, _, err) = p.run(&[
        "-f",
        "process-compose.yaml",
        "-f",
        "broken.override.yaml",
        "validate",
    ]);
    assert!(!status.success());
    assert!(err.contains("broken.override.yaml:4:7"), "{err}");

    let (status, _, err) = p.run(&["-f", "process-compose.yaml", "-f", "Procfile", "validate"]);
    assert!(!status.success());
    assert!(err.contains("cannot read"), "{err}");

    // The daemon reads both, and so does its `reload`.
    let both = [
        "-f",
        "process-compose.yaml",
        "-f",
        "process-compose.override.yaml",
    ];
    ok_run(&p, &[&both[..], &["up", "-d"]].concat());
    eventually(Duration::from_secs(10), "extra to have run", || {
        ok_run(&p, &["logs", "extra"]).contains("extra")
    });
    std::fs::write(
        p.path().join("process-compose.override.yaml"),
        "processes:\n  web:\n    command: \"echo override web\"\n  later:\n    command: \"echo later\"\n",
    )
    .unwrap();
    ok_run(&p, &["reload"]);
    eventually(Duration::from_secs(10), "later to have run", || {
        ok_run(&p, &["logs", "later"]).contains("later")
    });
    ok_run(&p, &["down"]);
    p.assert_nothing_left();
}

/// The names `ps` lists as running.
fn running_names(p: &Project) -> Vec<String> {
    let ps: serde_json::Value = serde_json::from_str(&ok_run(p, &["ps", "--json"])).unwrap();
    let mut names: Vec<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| in_state(s, "running"))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// `corral scale NAME N` (and `POST /v1/services/NAME/scale`) on a running stack: replicas come
/// and go with their own ports, a dependent waits for the new ones, 0 leaves none; `up -m`
/// applies to corral.toml as to a Procfile; a wrong name or count is refused with a reason.
#[test]
fn scale_changes_the_replicas_of_a_running_stack() {
    let p = Project::new(
        r#"
[services.web]
command = "echo web $CORRAL_REPLICA on $PORT; exec sleep 30"
replicas = 2
ports = ["auto"]

[services.front]
command = "exec sleep 30"
depends_on = ["web"]
"#,
    );
    ok_run(&p, &["up", "-d", "-m", "web=1"]);
    eventually(T, "web and front run", || {
        running_names(&p) == ["front", "web"]
    });

    let out = ok_run(&p, &["scale", "web", "3"]);
    assert!(out.contains("web-2"), "{out}");
    eventually(T, "three replicas and front run", || {
        running_names(&p) == ["front", "web-0", "web-1", "web-2"]
    });
    // Each replica has its own port.
    let ps: serde_json::Value = serde_json::from_str(&ok_run(&p, &["ps", "--json"])).unwrap();
    let mut ports: Vec<u64> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("web-"))
        .map(|s| s["ports"][0].as_u64().unwrap())
        .collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ps}");

    // Through the API: down to one, then none.
    let (code, body) = p.http("POST", "/v1/services/web/scale?replicas=1");
    assert_eq!(code, 200, "{body}");
    eventually(T, "one web", || running_names(&p) == ["front", "web"]);
    ok_run(&p, &["scale", "web", "0"]);
    eventually(T, "no web", || {
        !running_names(&p).iter().any(|n| n.starts_with("web"))
    });

    let (status, _, err) = p.run_client(&["scale", "webb", "2"]);
    assert!(!status.success());
    assert!(
        err.contains("`webb`") && err.contains("did you mean `web`"),
        "{err}"
    );
    let (status, _, err) = p.run_client(&["scale", "web", "1001"]);
    assert!(!status.success());
    assert!(err.contains("1000"), "{err}");
    let (code, body) = p.http("POST", "/v1/services/web/scale?replicas=-1");
    assert_eq!(code, 400, "{body}");
    let (code, body) = p.http("POST", "/v1/services/web/scale");
    assert!(code == 400 && body.contains("replicas=N"), "{body}");
    ok_run(&p, &["down"]);
    p.assert_nothing_left();

    // A Procfile's process type scales the same way, to foreman's names.
    let p = project(&[("Procfile", "web: exec sleep 30\nclock: exec sleep 30\n")]);
    ok_run(&p, &["up", "-d"]);
    eventually(T, "web and clock run", || {
        running_names(&p) == ["clock", "web"]
    });
    ok_run(&p, &["scale", "web", "2"]);
    eventually(T, "web.1 and web.2", || {
        running_names(&p) == ["clock", "web.1", "web.2"]
    });
    ok_run(&p, &["down"]);
    p.assert_nothing_left();
}

/// `log_file` puts a unit's log where the user says (per replica with `{replica}`), and `logs`
/// reads it there; two units cannot share one. `stop.parent_only` sends the stop signal to the
/// main process alone, which tells its child itself.
#[test]
fn log_file_and_parent_only() {
    // On TERM the main shell tells its child with USR1 (a moment later, so a child that got
    // TERM too has ended by then); a child that gets TERM says so.
    let script = r#"trap 'echo main got TERM; sleep 0.3; kill -USR1 $c 2>/dev/null; wait $c; exit 0' TERM
( trap 'echo child got TERM; exit 0' TERM; trap 'echo child got USR1; exit 0' USR1
  echo child up; while :; do sleep 0.05; done ) &
c=$!
wait $c"#;
    let p = Project::new(&format!(
        r#"
[services.web]
command = "echo web {{replica}} here; exec sleep 30"
replicas = 2
log_file = "logs/web-{{replica}}.log"

[services.gentle]
command = '''{script}'''
stop = {{ parent_only = true, timeout = "5s" }}
log_file = "gentle.log"

[services.group]
command = '''{script}'''
"#
    ));
    ok_run(&p, &["up", "-d"]);
    eventually(T, "both children up", || {
        p.read("gentle.log").contains("child up")
            && p.read(".corral/logs/group.log").contains("child up")
    });
    eventually(T, "web-1's line", || {
        ok_run(&p, &["logs", "web-1"]).contains("web 1 here")
    });
    assert!(p.read("logs/web-0.log").contains("out web 0 here"));
    assert!(!p.path().join(".corral/logs/web-0.log").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.path().join("logs/web-0.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok_run(&p, &["down"]);
    let gentle = p.read("gentle.log");
    assert!(
        gentle.contains("main got TERM") && gentle.contains("child got USR1"),
        "{gentle}"
    );
    assert!(!gentle.contains("child got TERM"), "{gentle}");
    let group = p.read(".corral/logs/group.log");
    assert!(group.contains("child got TERM"), "{group}");
    p.assert_nothing_left();

    std::fs::write(
        p.path().join("corral.toml"),
        "[services.a]\ncommand = \"x\"\nlog_file = \"one.log\"\n\n[services.b]\ncommand = \"y\"\nlog_file = \"one.log\"\n\n[tasks.t]\ncommand = \"z\"\nstop = { parent_only = true }\n",
    )
    .unwrap();
    let (status, out, err) = p.run_client(&["validate"]);
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("one.log` is the log file of `a` already"),
        "{err}"
    );
    assert!(err.contains("corral.toml:7:12"), "{err}");
    assert!(
        err.contains("`stop.parent_only` applies to services"),
        "{err}"
    );
}

/// `daemon = true` (process-compose's `is_daemon`): the command starts a daemon and exits 0;
/// the unit runs while the daemon runs (its PID in `ps`), a stop ends the daemon, the daemon's
/// death ends the unit, and a launcher that fails leaves nothing behind.
#[test]
fn a_daemon_runs_after_its_launcher_exits() {
    daemon_case(None);
    // Without cgroups its processes are found by corral's marker in their environment.
    daemon_case(Some(("CORRAL_CGROUP", "off")));
}

fn daemon_case(env: Option<(&str, &str)>) {
    let mut p = Project::new(
        r#"
[services.bg]
command = "setsid sh -c 'echo $$ > bg.pid; exec sleep 30' </dev/null >/dev/null 2>&1 & echo launched"
daemon = true

[services.after]
command = "exec sleep 30"
depends_on = { bg = "healthy" }

[services.broken]
command = "setsid sh -c 'echo $$ > broken.pid; exec sleep 30' </dev/null >/dev/null 2>&1 & while [ ! -s broken.pid ]; do sleep 0.01; done; exit 3"
daemon = true
restart = "never"
"#,
    );
    if let Some((k, v)) = env {
        p = p.with_env(k, v);
    }
    ok_run(&p, &["up", "-d"]);
    let pid_of = |file: &str| p.read(file).trim().parse::<i32>().ok();
    eventually(T, "the daemon is bg's process", || {
        let ps: serde_json::Value = serde_json::from_str(&ok_run(&p, &["ps", "--json"])).unwrap();
        let bg = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "bg")
            .unwrap()
            .clone();
        in_state(&bg, "running") && pid_of("bg.pid").is_some_and(|d| bg["pid"] == d)
    });
    eventually(T, "after runs", || {
        running_names(&p).contains(&"after".to_string())
    });
    // The broken launcher's leftover is ended with it.
    eventually(T, "broken's leftover ended", || {
        pid_of("broken.pid").is_some_and(is_dead)
    });

    let daemon = pid_of("bg.pid").unwrap();
    ok_run(&p, &["stop", "bg"]);
    eventually(T, "the daemon ended by stop", || is_dead(daemon));
    ok_run(&p, &["start", "bg", "--wait"]);
    eventually(T, "a new daemon", || {
        pid_of("bg.pid").is_some_and(|d| d != daemon && !is_dead(d))
    });
    // The daemon dies on its own: the unit has ended.
    let daemon = pid_of("bg.pid").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(T, "bg no longer runs", || {
        !running_names(&p).contains(&"bg".to_string())
    });
    ok_run(&p, &["down"]);
    p.assert_nothing_left();
}
