//! `corral validate` and config errors through the real binary.

use crate::harness::*;

fn redact(p: &Project, text: &str) -> String {
    text.replace(&p.path().display().to_string(), "[dir]")
}

#[test]
fn validate_reports_every_error_with_line_and_column() {
    let p = Project::new(
        r#"[services.api]
command = "./api"
depends_on = { db = "healthy", cach = "started" }
restart = { mod = "always" }

[services.db]
command = ["db"]
readiness = { tcp = "127.0.0.1:{port}", interval = "fast" }

[services.cache]
command = "cache"
depends_on = ["api"]
liveness = {}

[tasks.loop]
command = "x"
depends_on = ["loop2"]
[tasks.loop2]
command = "x"
depends_on = ["loop"]
"#,
    );
    let (status, out, err) = p.run(&["validate"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(out, "");
    insta::assert_snapshot!(redact(&p, &err));
}

#[test]
fn every_command_checks_the_config_first() {
    let p = Project::new("[services.x]\ncomand = 'oops'\n");
    for cmd in [&["up"][..], &["run"], &["validate"]] {
        let (status, _, err) = p.run(cmd);
        assert_eq!(status.code(), Some(2), "{cmd:?}");
        assert!(err.contains("corral.toml:2:1"), "{err}");
        assert!(err.contains("did you mean `command`?"), "{err}");
    }
}

#[test]
fn validate_counts_what_it_found() {
    let p = Project::new(
        "[services.a]\ncommand = 'x'\n[tasks.b]\ncommand = 'y'\n[targets.c]\ndepends_on = ['a']\n",
    );
    let (status, out, _) = p.run(&["validate"]);
    assert!(status.success());
    assert!(
        redact(&p, &out).starts_with("[dir]/corral.toml: ok (1 service, 1 task, 1 target)"),
        "{out}"
    );
}

#[test]
fn no_config_anywhere_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("up")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no `corral.toml`, `process-compose.yaml` or `Procfile` in"),
        "{err}"
    );
    assert!(err.contains("pass a file with `-f FILE`"), "{err}");
}

#[test]
fn dash_f_picks_the_file() {
    let p = Project::new("");
    std::fs::write(
        p.path().join("other.toml"),
        "[services.z]\ncommand = 'true'\n",
    )
    .unwrap();
    let (status, out, _) = p.run(&["-f", "other.toml", "validate"]);
    assert!(status.success());
    assert!(out.contains("other.toml: ok (1 service"), "{out}");
}
