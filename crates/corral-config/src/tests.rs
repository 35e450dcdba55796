use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use corral_engine::{Condition, Kind, RestartMode};

use crate::*;

fn env() -> BTreeMap<String, String> {
    [("HOME".to_string(), "/home/dev".to_string())]
        .into_iter()
        .collect()
}

fn parse(text: &str) -> Result<Project, ConfigError> {
    // A directory that exists and holds no `.env`.
    let dir = std::env::temp_dir().join("corral-config-tests-empty");
    std::fs::create_dir_all(&dir).unwrap();
    parse_project(&dir.join("corral.toml"), text, &env())
}

/// The rendered errors, with the temp path replaced for stable snapshots.
fn errors(text: &str) -> String {
    let err = parse(text).expect_err("config should be invalid");
    let dir = err.file.parent().unwrap().display().to_string();
    err.to_string().replace(&dir, "<dir>")
}

/// Which command strings run as words without a shell, and which need `sh -c`.
#[test]
fn plain_command_lines_are_split_and_the_rest_go_to_the_shell() {
    let words = |s: &str| crate::model::plain_words(s);
    for (line, argv) in [
        ("sleep 1000", &["sleep", "1000"][..]),
        ("  npm\trun  dev ", &["npm", "run", "dev"]),
        (
            "bin/server --port=8080 -v",
            &["bin/server", "--port=8080", "-v"],
        ),
        (
            "python3 -m http.server 4000",
            &["python3", "-m", "http.server", "4000"],
        ),
        (
            "ls a,b user@host:/x 50% +1",
            &["ls", "a,b", "user@host:/x", "50%", "+1"],
        ),
    ] {
        assert_eq!(words(line).expect(line), argv, "{line}");
    }
    for line in [
        "",
        "   ",
        "echo $HOME",
        "cd web && npm start",
        "a; b",
        "a | b",
        "a > out",
        "ls *.rs",
        "say 'hi there'",
        "say \"hi\"",
        "run ~/x",
        "sleep 1 # note",
        "first\nsecond",
        "PORT=1 server",
        "exec server",
        "cd dir",
        ". ./env",
        "if true",
        "echo hi",
        "true",
        "kill 1",
        "wait",
        "(sub)",
        "a\\ b",
        "`cmd`",
        "café",
    ] {
        assert_eq!(words(line), None, "{line:?}");
    }
    // As `to_argv` gives them, `{port}` filled in first.
    assert_eq!(
        Command::Shell("server --port {port}".into()).to_argv(Some(4000)),
        ["server", "--port", "4000"]
    );
    assert_eq!(
        Command::Shell("server > log".into()).to_argv(None),
        ["sh", "-c", "server > log"]
    );
}

#[test]
fn a_full_config_loads() {
    let p = parse(
        r#"
env = { GREETING = "hi ${HOME}", PRICE = "$$5" }

[services.db]
command = ["python3", "-m", "http.server", "{port}"]
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "200ms", failure_threshold = 5 }
stop = { signal = "SIGINT", timeout = "3s" }

[services.api]
command = "echo $GREETING"
depends_on = { db = "healthy", migrate = "completed_successfully" }
restart = { mode = "always", max_restarts = 4, backoff_initial = "100ms" }
liveness = { http = "/health", status = 200, body = "ok" }
ports = [8080]
log_ready = "listening on"

[tasks.migrate]
command = "true"
depends_on = ["db"]

[targets.all]
depends_on = ["api"]
"#,
    )
    .unwrap();
    assert_eq!(p.plan.units.len(), 4);
    let names: Vec<&str> = p.units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["db", "api", "migrate", "all"]);
    let db = &p.plan.units[0];
    assert_eq!(db.stop_signal, 2);
    assert_eq!(db.stop_grace, Duration::from_secs(3));
    assert_eq!(
        db.readiness.as_ref().unwrap().interval,
        Duration::from_millis(200)
    );
    assert_eq!(db.readiness.as_ref().unwrap().failure_threshold, 5);
    let api = &p.plan.units[1];
    assert_eq!(api.restart.mode, RestartMode::Always);
    assert_eq!(api.restart.max_restarts, 4);
    assert_eq!(api.restart.startup_max_restarts, 3, "defaults kept");
    assert_eq!(api.deps.len(), 2);
    assert_eq!(api.deps[0].condition, Condition::Healthy);
    assert_eq!(p.plan.units[2].deps[0].condition, Condition::Started);
    assert_eq!(p.plan.units[3].kind, Kind::Target);
    let api_def = &p.units[1];
    let envmap: BTreeMap<_, _> = api_def.env.iter().cloned().collect();
    assert_eq!(envmap["GREETING"], "hi /home/dev");
    assert_eq!(envmap["PRICE"], "$5");
    let Some(Probe {
        check: Check::Http {
            url, status, body, ..
        },
        ..
    }) = api_def.liveness.as_deref()
    else {
        panic!()
    };
    assert_eq!(url, "http://127.0.0.1:{port}/health");
    assert_eq!((*status, body.as_deref()), (Some(200), Some("ok")));
    assert_eq!(
        p.units[0].command.as_ref().unwrap().to_argv(Some(4000)),
        ["python3", "-m", "http.server", "4000"]
    );
    assert_eq!(
        api_def.command.as_ref().unwrap().to_argv(None),
        ["sh", "-c", "echo $GREETING"]
    );
}

#[test]
fn a_task_dependency_defaults_to_completed_successfully() {
    let p = parse("[tasks.a]\ncommand = 'true'\n[tasks.b]\ncommand = 'true'\ndepends_on = ['a']\n")
        .unwrap();
    assert_eq!(
        p.plan.units[1].deps[0].condition,
        Condition::CompletedSuccessfully
    );
}

#[test]
fn env_files_are_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "A=from-dotenv\nB=dotenv\n").unwrap();
    std::fs::write(dir.path().join("svc.env"), "B=svc-${A}\nC='lit ${A}'\n").unwrap();
    let text = "[services.s]\ncommand = 'true'\nenv_file = 'svc.env'\nenv = { D = '${B}!' }\n";
    let p = parse_project(&dir.path().join("corral.toml"), text, &env()).unwrap();
    let e: BTreeMap<_, _> = p.units[0].env.iter().cloned().collect();
    assert_eq!(e["A"], "from-dotenv");
    assert_eq!(e["B"], "svc-from-dotenv");
    assert_eq!(e["C"], "lit ${A}");
    assert_eq!(e["D"], "svc-from-dotenv!");
    assert_eq!(e["HOME"], "/home/dev");
}

#[test]
fn syntax_error_has_line_and_column() {
    insta::assert_snapshot!(errors("[services.a]\ncommand = 'x'\nports = [80,\n"));
}

#[test]
fn every_error_is_reported_at_once() {
    insta::assert_snapshot!(errors(
        r#"
[services.api]
comand = "python3 app.py"
depends_on = ["dbb", "cache"]
restart = { mode = "sometimes", backoff_max = "soon" }
readiness = { tcp = "127.0.0.1:{port}", http = "/x" }

[services.db]
command = ["postgres"]
ports = [70000]
stop = { signal = "SIGFOO" }

[services.cache]
command = "redis-server"
depends_on = { db = "healty" }

[tasks.seed]
command = []
depends_on = { db = "log_ready" }

[tagrets.x]
"#
    ));
}

#[test]
fn a_cycle_shows_its_path() {
    insta::assert_snapshot!(errors(
        r#"
[services.a]
command = "x"
depends_on = ["c"]

[services.b]
command = "x"
depends_on = ["a"]

[services.c]
command = "x"
depends_on = ["b"]
"#
    ));
}

#[test]
fn bad_names_and_duplicates() {
    insta::assert_snapshot!(errors(
        "[services.\"a b\"]\ncommand = 'x'\n[services.web]\ncommand = 'x'\n[tasks.web]\ncommand = 'y'\n[targets.t]\ndepends_on = { web = 'completed' }\n[services.z]\ncommand = 'x'\ndepends_on = { t = 'completed' }\n"
    ));
}

#[test]
fn absurd_values_are_refused_not_overflowed() {
    let err = errors(
        "[services.s]\ncommand = 'x'\nrestart = { backoff_max = '9999999999y' }\nstop = { signal = 40 }\n",
    );
    assert!(err.contains("is too long (at most 365 days)"), "{err}");
    assert!(err.contains("`stop.signal` must be from 1 to 31"), "{err}");
}

#[test]
fn find_config_walks_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
    let deep = dir.path().join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    assert_eq!(find_config(&deep).unwrap(), dir.path().join(FILE_NAME));
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(
        find_config(other.path()),
        Err(LoadError::NotFound(_))
    ));
    let _ = Path::new("");
}

#[test]
fn garbage_never_panics() {
    // A cheap fuzz: every prefix of a valid config, and some byte soup, must give Ok or Err.
    let text = r#"
[services.api]
command = ["python3", "-c", "print(1)"]
depends_on = { db = "healthy" }
readiness = { http = "/health", interval = "1s" }
restart = { mode = "always", jitter = 0.2 }
ports = ["auto", 9000]
[services.db]
command = "sleep 10"
log_ready = "ready (\\d+)"
"#;
    for end in 0..=text.len() {
        if text.is_char_boundary(end) {
            let _ = parse(&text[..end]);
        }
    }
    let mut rng = fastrand_like(42);
    for _ in 0..2000 {
        let len = (rng() % 80) as usize;
        let soup: String = (0..len)
            .map(|_| b"[]{}=\"'.,#\n abcdeflmnoprstuy0123456789_-\\"[(rng() % 41) as usize] as char)
            .collect();
        let _ = parse(&soup);
    }
}

/// A tiny xorshift, so this crate needs no RNG dependency for one test.
fn fastrand_like(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[test]
fn templates_parse_and_render_with_placeholders_filled() {
    let p = parse(
        r#"
[templates.ide]
command = ["python3", "ide.py", "--port", "{port}", "--dir", "{workspace}"]
env = { THEME = "{theme}" }
readiness = { http = "http://127.0.0.1:{port}/healthz" }
params = { theme = "dark", ext = "none" }
setup = ["echo installing {ext}", ["true"]]
files = { "settings.json" = '{"theme": "{theme}"}' }
port_range = [41000, 41010]
"#,
    )
    .unwrap();
    let t = &p.templates[0];
    assert_eq!(t.name, "ide");
    assert_eq!(t.params[0], ("theme".to_string(), "dark".to_string()));
    assert_eq!(t.setup.len(), 2);
    assert_eq!(t.port_range, Some((41000, 41010)));
    let vars = vec![
        ("port".to_string(), "41003".to_string()),
        ("workspace".to_string(), "/w/a \"b\"".to_string()),
        ("theme".to_string(), "light".to_string()),
    ];
    let body = t.instantiate(&vars, 41003);
    assert_eq!(
        body["command"],
        serde_json::json!([
            "python3",
            "ide.py",
            "--port",
            "41003",
            "--dir",
            "/w/a \"b\""
        ]),
        "{body}"
    );
    assert_eq!(body["env"]["THEME"], "light", "{body}");
    assert_eq!(body["ports"], serde_json::json!([41003]), "{body}");
    // What it renders is a valid service.
    let def = Definition::from_json("ide-1", &body, "instance `ide-1`");
    let p = p.with_definitions(&[def]).unwrap();
    let unit = p.unit("ide-1").unwrap();
    assert_eq!(unit.ports, [crate::PortDecl::Fixed(41003)]);
}

#[test]
fn template_mistakes_are_reported_in_place() {
    let e = errors(
        r#"
[templates.ide]
command = "run"
ports = [80]
files = { "../evil" = "x" }
port_range = [5000, 10]
comand = "x"
"#,
    );
    assert!(
        e.contains("an instance gets its port from the template"),
        "{e}"
    );
    assert!(e.contains("`../evil` is not a plain relative path"), "{e}");
    assert!(e.contains("from low to high"), "{e}");
    assert!(e.contains("did you mean `command`"), "{e}");
}

#[test]
fn definitions_errors_name_their_fields() {
    let p = parse("[services.db]\ncommand = 'x'\n").unwrap();
    let body = serde_json::json!({
        "command": "run",
        "restart": { "max_restarts": -1 },
        "depends_on": { "dbb": "healthy" },
        "comand": "x",
    });
    let def = Definition::from_json("api", &body, "service `api` (added at run time)");
    let err = p.with_definitions(&[def]).unwrap_err().to_string();
    assert!(
        err.contains("--> service `api` (added at run time), field `restart.max_restarts`"),
        "{err}"
    );
    assert!(
        err.contains("`restart.max_restarts` must be from 0 to 1000000"),
        "{err}"
    );
    assert!(
        err.contains("field `depends_on.dbb`") && err.contains("did you mean `db`?"),
        "{err}"
    );
    assert!(err.contains("unknown key `comand`"), "{err}");
    assert!(
        err.ends_with("service `api` (added at run time): 3 errors"),
        "{err}"
    );
    assert!(
        !err.contains("corral.toml:"),
        "no invented file positions: {err}"
    );
    // Duplicates and bad names too.
    let dup = Definition::from_json("db", &serde_json::json!({"command": "x"}), "service `db`");
    let err = p.with_definitions(&[dup]).unwrap_err().to_string();
    assert!(err.contains("`db` is defined twice"), "{err}");
}

#[test]
fn definitions_are_added_without_reading_the_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, "[services.db]\ncommand = 'x'\n").unwrap();
    let p = load_inheriting(&file, &env()).unwrap();
    // The file is being edited, and broken for now: a definition is still added.
    std::fs::write(&file, "[services.db\ncommand = ").unwrap();
    let json = serde_json::json!({"command": ["sleep", "1"], "depends_on": ["db"]});
    let def = Definition::from_json("api", &json, "service `api`");
    // A definition round-trips through its JSON unchanged (that is how the daemon stores it).
    assert_eq!(def.to_json(), json);
    let q = p.with_definitions(std::slice::from_ref(&def)).unwrap();
    let names: Vec<&str> = q.units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["db", "api"]);
    assert_eq!(q.plan.units[1].deps[0].unit, corral_engine::UnitId(0));
    // The file's units are not copied for the definitions added (an instance each, at run
    // time): both projects hold the same one; and an unchanged definition is not made again.
    assert!(std::sync::Arc::ptr_eq(&p.units[0], &q.units[0]));
    let r = q.with_definitions(&[def]).unwrap();
    assert!(std::sync::Arc::ptr_eq(&q.units[0], &r.units[0]));
    assert!(std::sync::Arc::ptr_eq(&q.units[1], &r.units[1]));
}

/// The file's units keep what they were resolved with as definitions are added, however many
/// times (their dependencies, the ports a definition may not take): the project holds one copy
/// of each unit's spec, in its plan.
#[test]
fn the_files_units_keep_their_dependencies_and_ports_as_definitions_come() {
    let p = parse(
        "[services.db]\ncommand = 'x'\nports = [5432]\n[services.web]\ncommand = 'y'\ndepends_on = ['db']\n",
    )
    .unwrap();
    let def = Definition::from_json("api", &serde_json::json!({"command": "z"}), "service `api`");
    let q = p.with_definitions(std::slice::from_ref(&def)).unwrap();
    let r = q.with_definitions(&[def]).unwrap();
    for project in [&q, &r] {
        let web = project.plan.find("web").unwrap();
        let db = project.plan.find("db").unwrap();
        assert_eq!(project.plan.units[web.0].deps.len(), 1);
        assert_eq!(project.plan.units[web.0].deps[0].unit, db);
    }
    let clash = Definition::from_json(
        "pg",
        &serde_json::json!({"command": "z", "ports": [5432]}),
        "service `pg`",
    );
    let err = r.with_definitions(&[clash]).unwrap_err().to_string();
    assert!(err.contains("5432"), "{err}");
}

/// A definition added at the end or taken out is made into the project by the short way
/// (`changed_by_one`); what it makes, and what it refuses with which words, is what lowering
/// every unit again makes and says.
#[test]
fn one_definition_more_or_fewer_makes_what_lowering_all_again_makes() {
    let p = parse(
        "[services.db]\ncommand = 'x'\nports = [5432]\nlog_ready = 'up'\n\
         [services.web]\ncommand = 'y'\ndepends_on = ['db']\n\
         [tasks.migrate]\ncommand = 'z'\n[targets.all]\ndepends_on = ['web']\n",
    )
    .unwrap();
    let def = |name: &str, json: serde_json::Value| Definition::from_json(name, &json, name);
    // What decides a project: every unit's definition and spec, and the definitions it keeps.
    let shape = |p: &Project| {
        format!(
            "{:?}|{:?}|{:?}",
            p.units,
            p.plan.units,
            p.added.iter().map(|(d, _)| &d.name).collect::<Vec<_>>()
        )
    };
    let same = |quick: &Result<Project, ConfigError>, defs: &[Definition]| {
        let whole = p.lowered_with(defs);
        match (quick, &whole) {
            (Ok(q), Ok(w)) => assert_eq!(shape(q), shape(w)),
            (Err(q), Err(w)) => assert_eq!(q.to_string(), w.to_string()),
            _ => panic!(
                "the short way and the whole way differ: {:?} / {:?}",
                quick.as_ref().err().map(ToString::to_string),
                whole.as_ref().err().map(ToString::to_string)
            ),
        }
    };
    let mut defs = vec![
        def(
            "a",
            serde_json::json!({"command": "run a", "depends_on": ["db", "migrate"]}),
        ),
        def(
            "b",
            serde_json::json!({"command": "run b", "ports": [7001], "log_file": "b.txt"}),
        ),
        def(
            "c",
            serde_json::json!({"command": "run c", "depends_on": {"a": "healthy", "db": "log_ready"}}),
        ),
        def(
            "d",
            serde_json::json!({"command": "run d", "env": {"X": "1"}, "depends_on": ["c"]}),
        ),
    ];
    let mut now = p.clone();
    for i in 0..defs.len() {
        let next = now.with_definitions(&defs[..=i]);
        same(&next, &defs[..=i]);
        now = next.unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&now.units[0], &p.units[0]),
            "the file's units are shared"
        );
    }
    // Refused, and said as the whole way says it: a port or a log file taken, a name taken,
    // a dependency unknown, on itself, or on what never completes or logs.
    for bad in [
        def("e", serde_json::json!({"command": "x", "ports": [5432]})),
        def("e", serde_json::json!({"command": "x", "ports": [7001]})),
        def(
            "e",
            serde_json::json!({"command": "x", "log_file": "b.txt"}),
        ),
        def("web", serde_json::json!({"command": "x"})),
        def(
            "e",
            serde_json::json!({"command": "x", "depends_on": ["nope"]}),
        ),
        def(
            "e",
            serde_json::json!({"command": "x", "depends_on": ["e"]}),
        ),
        def(
            "e",
            serde_json::json!({"command": "x", "depends_on": {"all": "completed"}}),
        ),
        def(
            "e",
            serde_json::json!({"command": "x", "depends_on": {"a": "log_ready"}}),
        ),
        def("e", serde_json::json!({"comand": "x"})),
    ] {
        let mut with = defs.clone();
        with.push(bad);
        let quick = now.with_definitions(&with);
        assert!(quick.is_err(), "{with:?}");
        same(&quick, &with);
    }
    // Taken out: one that another depends on is refused; from the middle, the units after it
    // move down and their dependencies with them; the last one; all of them.
    let without = |defs: &[Definition], name: &str| -> Vec<Definition> {
        defs.iter().filter(|d| d.name != name).cloned().collect()
    };
    let quick = now.with_definitions(&without(&defs, "a"));
    assert!(quick.is_err());
    same(&quick, &without(&defs, "a"));
    for name in ["b", "d", "c", "a"] {
        defs = without(&defs, name);
        let next = now.with_definitions(&defs);
        same(&next, &defs);
        now = next.unwrap();
    }
    assert_eq!(shape(&now), shape(&p));
}

#[test]
fn values_filled_into_shell_strings_are_quoted() {
    let p = parse(
        r#"
[templates.t]
command = "echo {greeting} > {workspace}/out.txt"
env = { G = "{greeting}" }
readiness = { exec = "test -f {workspace}/out.txt" }
setup = ["echo {greeting}", ["echo", "{greeting}"]]
params = { greeting = "hi" }
"#,
    )
    .unwrap();
    let t = &p.templates[0];
    let vars = vec![
        ("greeting".to_string(), "x; touch PWNED #".to_string()),
        ("workspace".to_string(), "/w/it's here".to_string()),
        ("other".to_string(), "{greeting}".to_string()),
    ];
    let body = t.instantiate(&vars, 5000);
    assert_eq!(
        body["command"],
        r#"echo 'x; touch PWNED #' > '/w/it'\''s here'/out.txt"#
    );
    assert_eq!(
        body["env"]["G"], "x; touch PWNED #",
        "not a shell string: as given"
    );
    assert_eq!(
        body["readiness"]["exec"],
        r#"test -f '/w/it'\''s here'/out.txt"#
    );
    let setup = t.setup_argv(&vars, 5000);
    assert_eq!(setup[0], ["sh", "-c", "echo 'x; touch PWNED #'"]);
    assert_eq!(
        setup[1],
        ["echo", "x; touch PWNED #"],
        "argv: one argument, unquoted"
    );
    // One pass: a value is not searched for placeholders again; unknown ones stay.
    assert_eq!(fill("{other} {nope}", &vars), "{greeting} {nope}");
    assert_eq!(shell_quote("plain-word_1.2"), "plain-word_1.2");
    assert_eq!(shell_quote(""), "''");
}

#[test]
fn what_would_fail_or_lose_data_at_run_time_is_refused() {
    let e = errors(
        r#"
[services.a]
command = "x"
env = { "" = "1", "A=B" = "2", OK = "a\u0000b" }
ports = [7000, 7000, "auto", "auto"]
log = { max_file_size = "0" }

[services.b]
command = "x"
ports = [7000]
readiness = { tcp = "127.0.0.1:{prot}" }

[templates.t]
command = "serve {nope}"
params = { name2 = "x" }
"#,
    );
    for want in [
        "`` cannot name an environment variable",
        "`A=B` cannot name an environment variable",
        "env `OK` holds a NUL byte",
        "port 7000 is declared twice",
        "`auto` twice",
        "`log.max_file_size` `0` is too small",
        "port 7000 is declared by `a` already",
        "unknown placeholder `{prot}` in `readiness`",
        "unknown placeholder `{nope}` in template `t`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // Each with its place.
    assert!(e.contains("corral.toml:5:16"), "{e}");
}

#[test]
fn env_file_errors_never_print_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shadow"),
        "root:$6$s3cr3tHASH:19000:0:99999:7:::\n",
    )
    .unwrap();
    let text = "[services.s]\ncommand = 'x'\nenv_file = 'shadow'\n";
    let err = parse_project(&dir.path().join("corral.toml"), text, &env())
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cr3t") && !err.contains("root:"), "{err}");
    assert!(err.contains("shadow:1:1: expected `KEY=value`"), "{err}");
    assert!(
        err.contains("corral.toml:3:12"),
        "and where it is named: {err}"
    );
}

#[test]
fn user_group_and_umask_are_checked_where_written() {
    let e = errors(
        "[services.a]\ncommand = 'x'\nuser = 'no-such-user-here'\numask = '999'\n\n[services.b]\ncommand = 'x'\ngroup = 'no-such-group-here'\n",
    );
    assert!(
        e.contains("no user `no-such-user-here` on this machine"),
        "{e}"
    );
    assert!(e.contains("`umask` must be an octal mode"), "{e}");
    assert!(e.contains("no group `no-such-group-here`"), "{e}");
    if nix::unistd::Uid::effective().is_root() {
        let p = parse("[services.a]\ncommand = 'x'\nuser = 'nobody'\numask = '027'\n").unwrap();
        let id = p.units[0].identity.as_ref().unwrap();
        assert_eq!((id.user.as_str(), id.uid), ("nobody", 65534));
        assert_eq!(p.units[0].umask, Some(0o027));
    } else {
        let e = errors("[services.a]\ncommand = 'x'\nuser = 'root'\n");
        assert!(e.contains("cannot run this as `root`"), "{e}");
    }
}

#[test]
fn replicas_shell_and_their_mistakes() {
    let p = parse(
        r#"
shell = ["bash", "-eu", "-c"]

[services.web]
command = "serve --id {replica}"
replicas = 3
ports = ["auto"]

[services.api]
command = ["sleep", "1"]
shell = "zsh"
depends_on = { web = "healthy" }

[tasks.one]
command = "echo {replica}"
replicas = 1
"#,
    )
    .unwrap();
    let names: Vec<&str> = p.units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2", "api", "one"]);
    assert_eq!(
        p.unit("web-2").unwrap().command,
        Some(Command::Argv(vec![
            "bash".into(),
            "-eu".into(),
            "-c".into(),
            "serve --id 2".into()
        ]))
    );
    assert!(
        p.unit("web-1")
            .unwrap()
            .env
            .contains(&("CORRAL_REPLICA".to_string(), "1".to_string()))
    );
    let api = p.plan.find("api").unwrap();
    assert_eq!(p.plan.get(api).deps.len(), 3);
    assert_eq!(
        p.unit("one").unwrap().command.as_ref().unwrap().display(),
        "bash -eu -c echo 0"
    );

    let e = errors(
        "[services.web]\ncommand = \"x\"\nreplicas = 0\n\n[services.web-1]\ncommand = \"y\"\nshell = []\n",
    );
    assert!(
        e.contains("`replicas` must be a whole number from 1 to 1000"),
        "{e}"
    );
    assert!(e.contains("<dir>/corral.toml:3:12"), "{e}");
    assert!(
        e.contains("`shell` must be a program or a non-empty list"),
        "{e}"
    );

    let e = errors(
        "[services.web]\ncommand = \"x\"\nreplicas = 2\n\n[services.web-1]\ncommand = \"y\"\n",
    );
    assert!(e.contains("`web-1` is defined twice"), "{e}");
}

#[test]
fn https_probes_verify_unless_insecure_and_process_compose_implies_insecure() {
    let probe_of = |p: &Project, name: &str| match p.unit(name).unwrap().readiness.as_deref() {
        Some(Probe {
            check: Check::Http { url, insecure, .. },
            ..
        }) => (url.clone(), *insecure),
        other => panic!("{other:?}"),
    };
    let p = parse(
        "[services.a]\ncommand = \"x\"\nreadiness = { http = \"https://127.0.0.1:8443/up\" }\n\n\
         [services.b]\ncommand = \"x\"\nreadiness = { http = \"https://localhost:8443/\", insecure = true }\n",
    )
    .unwrap();
    assert_eq!(
        probe_of(&p, "a"),
        ("https://127.0.0.1:8443/up".into(), false)
    );
    assert_eq!(probe_of(&p, "b"), ("https://localhost:8443/".into(), true));
    let e = errors(
        "[services.a]\ncommand = \"x\"\nreadiness = { http = \"http://127.0.0.1:80/\", insecure = true }\n",
    );
    assert!(
        e.contains("`insecure` only applies to an `https://` URL"),
        "{e}"
    );
    let e = errors("[services.a]\ncommand = \"x\"\nreadiness = { http = \"ftp://x/\" }\n");
    assert!(e.contains("`http://` or `https://` URL"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("process-compose.yaml");
    let yaml = "processes:\n  web:\n    command: serve\n    readiness_probe:\n      http_get:\n        scheme: https\n        host: 127.0.0.1\n        port: 8443\n        path: health\n";
    let p = parse_project(&file, yaml, &env()).unwrap();
    assert_eq!(
        probe_of(&p, "web"),
        ("https://127.0.0.1:8443/health".into(), true)
    );
    assert!(p.warnings().is_empty(), "{}", p.warnings());
}

#[test]
fn a_formation_sets_replicas_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    let text = "[services.web]\ncommand = \"x\"\nreplicas = 2\n\n[services.api]\ncommand = \"y\"\ndepends_on = [\"web\"]\n\n[targets.all]\ndepends_on = [\"api\"]\n";
    let with = |pairs: &[(&str, usize)]| {
        let options = formats::ReadOptions {
            formation: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        };
        parse_project_with(&file, text, &env(), &options)
    };
    let names = |p: &Project| p.units.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
    let p = with(&[("web", 3), ("api", 2)]).unwrap();
    assert_eq!(
        names(&p),
        ["web-0", "web-1", "web-2", "api-0", "api-1", "all"]
    );
    // Every api replica waits for every web replica; the target for both api replicas.
    let api1 = p.plan.find("api-1").unwrap();
    assert_eq!(p.plan.get(api1).deps.len(), 3);
    let p = with(&[("web", 0)]).unwrap();
    assert_eq!(names(&p), ["web", "api", "all"]);
    assert!(p.unit("web").unwrap().disabled);
    let e = with(&[("wbe", 1), ("all", 2)]).unwrap_err().to_string();
    assert!(
        e.contains("it names `wbe`") && e.contains("the services and tasks here: web, api"),
        "{e}"
    );
    assert!(e.contains("`all` is a target"), "{e}");
}

/// Units with equal environments share one copy (memory at scale); one with its own variable
/// has its own, with that variable in it.
#[test]
fn equal_environments_are_shared() {
    let p = parse(
        "[services.a]\ncommand = \"x\"\n[services.b]\ncommand = \"x\"\n[services.c]\ncommand = \"x\"\nenv = { ONLY_C = \"1\" }\n[services.d]\ncommand = \"x\"\nenv = { SAME = \"1\" }\n[services.e]\ncommand = \"x\"\nenv = { SAME = \"1\" }\n",
    )
    .unwrap();
    let env = |n: &str| &p.units[p.plan.find(n).unwrap().0].env;
    // No environment of their own: the inherited one, made once.
    assert!(std::sync::Arc::ptr_eq(env("a"), env("b")));
    // Equal ones of their own: one copy too.
    assert!(std::sync::Arc::ptr_eq(env("d"), env("e")));
    assert!(!std::sync::Arc::ptr_eq(env("a"), env("d")));
    assert!(!std::sync::Arc::ptr_eq(env("a"), env("c")));
    assert!(env("c").iter().any(|(k, v)| k == "ONLY_C" && v == "1"));
    assert!(!env("a").iter().any(|(k, _)| k == "ONLY_C"));
}
