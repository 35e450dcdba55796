//! What people read — `ps`, `why`, `tree`, the `run` summary — as snapshots (insta), with what
//! changes from run to run redacted (`redact.rs`). A change to these is a change people see:
//! review it with `cargo insta review` (or the `.snap.new` files).

use std::time::Duration;

use crate::harness::*;
use crate::redact::{redact, redact_table};

const STACK: &str = r#"
[services.db]
command = ["sleep", "1000"]
ports = ["auto"]

[services.api]
command = "exec sleep 1000"
depends_on = { db = "started", migrate = "completed_successfully" }

[services.broken]
command = ["./no-such-program"]

[services.worker]
command = ["sleep", "1000"]
depends_on = ["api"]

[tasks.migrate]
command = "echo migrated"

[tasks.lint]
command = "exit 3"
allow_failure = true

[tasks.check]
command = "exit 1"

[tasks.deploy]
command = "true"
depends_on = ["check"]

[targets.backend]
depends_on = ["api", "db"]
"#;

fn out(p: &Project, args: &[&str]) -> String {
    let (status, out, err) = p.run_client(args);
    assert!(status.success(), "corral {args:?}: {out}{err}");
    out
}

#[test]
fn ps_why_and_tree_read_well() {
    let p = Project::new(STACK);
    out(&p, &["up", "-d"]);
    // Running first (it waits for `api`), so that it has a last exit to show.
    out(&p, &["start", "worker", "--wait"]);
    out(&p, &["stop", "worker", "--wait"]);
    // Settled: the tasks have ended, the services run.
    eventually(Duration::from_secs(15), "the stack to settle", || {
        let ps = out(&p, &["ps"]);
        ps.contains("deploy   task     skipped") && ps.contains("check    task     exited")
    });
    // db is stopped under api: api keeps running, degraded.
    out(&p, &["stop", "db", "--wait"]);
    let ps = redact_table(&out(&p, &["ps"]), p.path());
    insta::assert_snapshot!("ps", ps);
    let why: Vec<String> = ["api", "broken", "worker", "deploy"]
        .iter()
        .map(|n| redact(&out(&p, &["why", n]), p.path()))
        .collect();
    insta::assert_snapshot!("why", why.join("\n---\n"));
    insta::assert_snapshot!("tree", redact(&out(&p, &["tree"]), p.path()));
    out(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn the_run_summary_reads_well() {
    let p = Project::new(STACK);
    let (status, stdout, _) = p.run(&["run", "-q"]);
    assert!(!status.success(), "a required task failed: exit non-zero");
    insta::assert_snapshot!("run_summary", redact(&stdout, p.path()));
    p.assert_nothing_left();
}

/// The bash completion script (the binary's path redacted) and a command's man page.
#[test]
fn completion_script_and_man_page() {
    let p = Project::new("[services.a]\ncommand = \"true\"\n");
    let (status, script, err) = p.run_client(&["completions", "bash"]);
    assert!(status.success(), "{err}");
    insta::assert_snapshot!("completions_bash", script.replace(BIN, "[BIN]"));
    let (status, man, err) = p.run_client(&["man", "stop"]);
    assert!(status.success(), "{err}");
    insta::assert_snapshot!("man_stop", man);
    let (status, _, err) = p.run_client(&["man", "nope"]);
    assert!(!status.success());
    assert!(err.contains("`corral` has no command `nope`"), "{err}");
    let (status, _, err) = p.run_client(&["completions", "tcsh"]);
    assert!(!status.success());
    assert!(err.contains("bash, zsh, fish, elvish, powershell"), "{err}");
}
