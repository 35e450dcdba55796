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

/// `corral schema`: a JSON Schema that accepts the demo and a config using every feature, and
/// rejects what `validate` rejects in a sample of mistakes (checked with Python's jsonschema).
#[test]
fn the_schema_accepts_what_validate_accepts_and_rejects_a_sample_of_mistakes() {
    let has_jsonschema = std::process::Command::new("python3")
        .args(["-c", "import jsonschema, tomllib"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_jsonschema {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with jsonschema is needed"
        );
        eprintln!("skipped: no python3 jsonschema here");
        return;
    }
    let p = Project::new(crate::export::EVERY_FEATURE);
    let (status, schema, err) = p.run(&["schema"]);
    assert!(status.success(), "{err}");
    let schema_json: serde_json::Value = serde_json::from_str(&schema).unwrap();
    insta::assert_snapshot!(
        "schema",
        serde_json::to_string_pretty(&schema_json).unwrap()
    );
    std::fs::write(p.path().join("corral.schema.json"), &schema).unwrap();
    // What the schema says of a file: "ok" or its first error.
    let check = |file: &std::path::Path| -> String {
        let script = format!(
            "import json, tomllib, jsonschema\nv = jsonschema.Draft202012Validator(json.load(open('{}')))\nerrs = [e.message for e in v.iter_errors(tomllib.load(open('{}', 'rb')))]\nprint(errs[0] if errs else 'ok')",
            p.path().join("corral.schema.json").display(),
            file.display()
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corral.toml");
    assert_eq!(check(&demo), "ok");
    assert_eq!(check(&p.path().join("corral.toml")), "ok");
    for (bad, why) in [
        (
            "[services.a]\ncommand = \"x\"\nrestrat = \"always\"\n",
            "restrat",
        ),
        ("[services.a]\ncommand = 5\n", "5"),
        ("[services.a]\ncommand = \"x\"\nports = [\"any\"]\n", "any"),
        (
            "[services.a]\ncommand = \"x\"\nreadiness = { http = \"/\", intervall = \"1s\" }\n",
            "intervall",
        ),
        (
            "[services.a]\ncommand = \"x\"\ndepends_on = { b = \"ready\" }\n\n[services.b]\ncommand = \"y\"\n",
            "ready",
        ),
        (
            "[tasks.t]\ncommand = \"x\"\nschedule = \"* * * * *\"\noverlap = \"later\"\n",
            "later",
        ),
        (
            "[services.a]\ncommand = \"x\"\nrestart = { mode = \"sometimes\" }\n",
            "sometimes",
        ),
        ("[targets.t]\ncommand = \"x\"\n", "command"),
    ] {
        std::fs::write(p.path().join("corral.toml"), bad).unwrap();
        let said = check(&p.path().join("corral.toml"));
        assert!(
            said != "ok" && said.contains(why),
            "the schema let `{bad}` pass: {said}"
        );
        let (status, _, err) = p.run(&["validate"]);
        assert!(!status.success(), "validate let `{bad}` pass: {err}");
    }
}

/// `validate --json`: every error placed (file, line, column, message, help), exit 2; or what
/// the file defines.
#[test]
fn validate_json_places_every_error() {
    let p = Project::new("[services.a]\ncommand = 5\nfoo = 1\n");
    let (status, out, err) = p.run(&["validate", "--json"]);
    assert_eq!(status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(
        (errors[0]["line"].as_u64(), errors[0]["column"].as_u64()),
        (Some(2), Some(11))
    );
    assert!(
        errors[1]["message"].as_str().unwrap().contains("`foo`"),
        "{v}"
    );
    std::fs::write(
        p.path().join("corral.toml"),
        "[services.a]\ncommand = \"true\"\n\n[tasks.t]\ncommand = \"true\"\n",
    )
    .unwrap();
    let (status, out, _) = p.run(&["validate", "--json"]);
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["services"].as_u64(),
            v["tasks"].as_u64()
        ),
        (Some(true), Some(1), Some(1)),
        "{v}"
    );
}
