//! `corral export systemd`: the units it writes say what corral.toml says, and every one passes
//! `systemd-analyze verify` (Debian's systemd).

use crate::harness::*;

#[test]
fn systemd_units_verify_and_carry_the_config() {
    let p = Project::new(
        r#"
env = { GREETING = "50% off, say \"hi\"" }

[services.db]
command = ["sleep", "1000"]
ports = [15432]
restart = { mode = "always", max_restarts = 4, backoff_initial = "2s", reset_after = "5m" }
stop = { signal = "SIGINT", timeout = "20s" }
readiness = { tcp = "127.0.0.1:{port}" }

[services.api]
command = "echo listening on $PORT with $GREETING; exec sleep 1000"
depends_on = { db = "healthy", migrate = "completed_successfully" }
ports = ["auto"]
shutdown_command = ["kill", "-TERM", "1"]
umask = "027"

[tasks.migrate]
command = ["true"]
depends_on = ["db"]

[services.cleaner]
command = ["sleep", "1000"]
restart = "never"
depends_on = { migrate = "completed" }

[targets.backend]
depends_on = ["api", "db"]
"#,
    );
    let out_dir = p.path().join("units");
    let (status, _, err) = p.run(&[
        "export",
        "systemd",
        "-o",
        out_dir.to_str().unwrap(),
        "--prefix",
        "shop",
    ]);
    assert!(status.success(), "{err}");
    // What could not be carried is said.
    assert!(err.contains("api: an `auto` port"), "{err}");
    assert!(err.contains("`db = \"healthy\"` becomes an order"), "{err}");
    let read = |n: &str| std::fs::read_to_string(out_dir.join(n)).unwrap();
    let db = read("shop-db.service");
    for line in [
        "Type=exec",
        "ExecStart=/usr/bin/sleep 1000",
        "Restart=always",
        "RestartSec=2s",
        "StartLimitBurst=5",
        "StartLimitIntervalSec=300s",
        "KillSignal=SIGINT",
        "TimeoutStopSec=20s",
        "KillMode=control-group",
        "Environment=\"PORT=15432\"",
        "Environment=\"GREETING=50%% off, say \\\"hi\\\"\"",
        "WantedBy=shop.target",
    ] {
        assert!(db.lines().any(|l| l == line), "no `{line}` in:\n{db}");
    }
    let api = read("shop-api.service");
    for line in [
        "Requires=shop-db.service",
        "After=shop-db.service",
        "Requires=shop-migrate.service",
        "ExecStart=/bin/sh -c \"echo listening on $$PORT with $$GREETING; exec sleep 1000\"",
        "ExecStop=/usr/bin/kill -TERM 1",
        "UMask=0027",
    ] {
        assert!(api.lines().any(|l| l == line), "no `{line}` in:\n{api}");
    }
    let migrate = read("shop-migrate.service");
    assert!(
        migrate.contains("Type=oneshot\nRemainAfterExit=yes"),
        "{migrate}"
    );
    let cleaner = read("shop-cleaner.service");
    assert!(cleaner.contains("Wants=shop-migrate.service"), "{cleaner}");
    assert!(cleaner.contains("Restart=no"), "{cleaner}");
    let backend = read("shop-backend.target");
    assert!(backend.contains("Requires=shop-api.service"), "{backend}");
    let project = read("shop.target");
    assert!(project.contains("WantedBy=multi-user.target"), "{project}");
    for unit in [
        "shop-db.service",
        "shop-backend.target",
        "shop-migrate.service",
    ] {
        assert!(project.contains(unit), "{project}");
    }

    // systemd's own check, on every file.
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is needed (apt-get install systemd)"
        );
        eprintln!("skipped the systemd check: no systemd-analyze here");
        return;
    }
    let files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    assert_eq!(files.len(), 6);
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    // Warnings about our files are defects too.
    assert!(
        !said.lines().any(|l| l.contains("shop")),
        "systemd-analyze verify: {said}"
    );
}

/// `corral export kubernetes`: Deployments, Services, ConfigMaps, a Job and an init container,
/// probes and stop behaviour mapped; the stream passes `kubernetes-validate --strict`.
#[test]
fn kubernetes_manifests_validate_and_carry_the_config() {
    let p = Project::new(
        r#"
[services.db]
command = ["postgres"]
image = "postgres:16"
ports = [5432]
env = { POSTGRES_DB = "shop" }
readiness = { tcp = "127.0.0.1:{port}", interval = "2s", failure_threshold = 5 }
stop = { signal = "SIGINT", timeout = "30s" }

[services.api]
command = "exec ./api --port 8080"
ports = [8080]
depends_on = { db = "healthy", migrate = "completed_successfully" }
readiness = { http = "/health", interval = "3s" }
liveness = { exec = ["./api", "--check"], interval = "10s" }

[tasks.migrate]
command = ["./migrate"]

[tasks.report]
command = ["./report"]
depends_on = ["api"]
"#,
    );
    let out = p.path().join("k8s.yaml");
    let (status, _, err) = p.run(&[
        "export",
        "kubernetes",
        "--image",
        "shop/app:1",
        "--namespace",
        "shop",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(status.success(), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {text}"))
            .clone()
    };
    let db = find("Deployment", "db");
    let c = &db["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "postgres:16");
    assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], 5432);
    assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    assert_eq!(c["readinessProbe"]["failureThreshold"], 5);
    assert_eq!(
        c["lifecycle"]["preStop"]["exec"]["command"][2],
        "kill -INT 1"
    );
    assert_eq!(
        db["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(db["metadata"]["namespace"], "shop");
    assert_eq!(find("Service", "db")["spec"]["ports"][0]["port"], 5432);
    assert_eq!(find("ConfigMap", "db-env")["data"]["POSTGRES_DB"], "shop");
    let api = find("Deployment", "api");
    let pod = &api["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "shop/app:1");
    assert_eq!(
        pod["containers"][0]["command"],
        serde_json::json!(["/bin/sh", "-c", "exec ./api --port 8080"])
    );
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["port"],
        8080
    );
    assert_eq!(
        pod["containers"][0]["livenessProbe"]["exec"]["command"],
        serde_json::json!(["./api", "--check"])
    );
    // The task api waits for runs before it, in its pod; the other is a Job.
    assert_eq!(pod["initContainers"][0]["name"], "migrate");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Job" && d["metadata"]["name"] == "migrate")
    );
    assert_eq!(
        find("Job", "report")["spec"]["template"]["spec"]["restartPolicy"],
        "Never"
    );
    assert!(err.contains("db: a Deployment always restarts"), "{err}");

    let validate = std::process::Command::new("kubernetes-validate")
        .args(["--strict", out.to_str().unwrap()])
        .output();
    let Ok(v) = validate else {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is needed (pip install kubernetes-validate)"
        );
        eprintln!("skipped the schema check: no kubernetes-validate here");
        return;
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(v.status.success(), "kubernetes-validate: {said}");
    assert_eq!(said.matches("passed").count(), docs.len(), "{said}");
}

pub(crate) const EVERY_FEATURE: &str = r#"
env = { STAGE = "prod", PRICE = "$$5 100%" }

[services.db]
command = ["sleep", "1000"]
image = "postgres:16"
ports = [5432]
readiness = { tcp = "127.0.0.1:{port}", interval = "2s", failure_threshold = 5 }
stop = { signal = "SIGINT", timeout = "30s" }
restart = { mode = "always", max_restarts = 4, backoff_initial = "2s" }

[services.cache]
command = "echo cache ready; exec sleep 1000"
log_ready = "cache ready"
restart = "never"

[services.api]
command = "exec sleep 1000 # --port {port}"
ports = [8080]
depends_on = { db = "healthy", migrate = "completed_successfully", cache = "log_ready" }
readiness = { http = "/health", interval = "3s" }
liveness = { exec = ["true"], interval = "10s" }
shutdown_command = ["true"]

[services.worker]
command = ["sleep", "1000"]
ports = ["auto"]
depends_on = { api = "started", report = "completed" }

[tasks.migrate]
command = ["true"]

[tasks.report]
command = ["true"]

[targets.backend]
depends_on = ["api", "db"]

[templates.box]
command = ["sleep", "1000"]
"#;

/// `corral export compose`: the services, their conditions and healthchecks; and every
/// exporter gives byte-identical output for the same input, kept as golden files for review.
#[test]
fn exports_are_stable_and_reviewed() {
    let p = Project::new(EVERY_FEATURE);
    let export = |args: &[&str]| {
        let (status, out, err) = p.run(args);
        assert!(status.success(), "{err}");
        (out, err)
    };
    let (compose, notes) = export(&["export", "compose", "--image", "shop/app:1"]);
    let doc: serde_json::Value = serde_json::from_str(&without_comments(&compose)).unwrap();
    // What was lost is in the file too.
    assert!(
        compose.contains("# not carried: worker: an `auto` port"),
        "{compose}"
    );
    let api = &doc["services"]["api"];
    assert_eq!(api["depends_on"]["db"]["condition"], "service_healthy");
    assert_eq!(
        api["depends_on"]["migrate"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(api["depends_on"]["cache"]["condition"], "service_started");
    assert_eq!(api["ports"][0], "8080:8080");
    assert_eq!(api["healthcheck"]["interval"], "3s");
    assert_eq!(doc["services"]["db"]["image"], "postgres:16");
    assert_eq!(doc["services"]["db"]["stop_signal"], "SIGINT");
    assert_eq!(doc["services"]["db"]["stop_grace_period"], "30s");
    assert_eq!(doc["services"]["db"]["restart"], "always");
    assert_eq!(doc["services"]["migrate"]["restart"], "no");
    assert_eq!(doc["services"]["db"]["environment"]["PRICE"], "$$5 100%");
    assert!(doc["services"].get("backend").is_none());
    for said in [
        "cache = \"log_ready\"` becomes service_started",
        "backend: targets have no Compose object",
        "worker: an `auto` port",
        "templates are made into instances",
    ] {
        assert!(notes.contains(said), "not said: {said}\n{notes}");
    }

    // Stable: the same input, the same bytes; kept as golden files.
    // The temp directory's path and name (the default prefix, lowercased by Compose).
    let dir_name = p.path().file_name().unwrap().to_string_lossy().into_owned();
    let redact = |s: String| {
        s.replace(&p.path().display().to_string(), "<project>")
            .replace(&dir_name, "<dir>")
            .replace(&dir_name.to_ascii_lowercase(), "<dir>")
    };
    let again = export(&["export", "compose", "--image", "shop/app:1"]).0;
    assert_eq!(compose, again);
    insta::assert_snapshot!("export_compose", redact(compose));
    let k8s = export(&["export", "kubernetes", "--image", "shop/app:1"]).0;
    assert_eq!(
        k8s,
        export(&["export", "kubernetes", "--image", "shop/app:1"]).0
    );
    insta::assert_snapshot!("export_kubernetes", redact(k8s));
    let nomad = export(&["export", "nomad", "-o", "-"]).0;
    assert_eq!(nomad, export(&["export", "nomad", "-o", "-"]).0);
    insta::assert_snapshot!(
        "export_nomad",
        redact(nomad)
            .replace("/usr/bin/sleep", "<sleep>")
            .replace("/usr/bin/true", "<true>")
    );
    let units = export(&["export", "systemd", "-o", "-", "--prefix", "shop"]).0;
    assert_eq!(
        units,
        export(&["export", "systemd", "-o", "-", "--prefix", "shop"]).0
    );
    // The programs' paths are this machine's.
    let units = redact(units)
        .replace("/usr/bin/sleep", "<sleep>")
        .replace("/usr/bin/true", "<true>");
    insta::assert_snapshot!("export_systemd", units);
}

/// The Compose export of the demo stack and of a stack with every feature, checked against the
/// Compose specification's JSON schema — the one docker-compose 1.29.2 ships (Apache-2.0), fetched
/// from PyPI into `target/` at test time, not kept in the repository.
#[test]
fn compose_files_match_the_compose_schema() {
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/compose-spec");
    let schema = cache.join("compose_spec.json");
    if !schema.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let fetched = std::process::Command::new("python3")
            .args(["-m", "pip", "download", "-q", "--no-deps", "docker-compose==1.29.2", "-d"])
            .arg(&cache)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("python3")
                .arg("-c")
                .arg(format!(
                    "import zipfile, glob; z = zipfile.ZipFile(glob.glob('{}/docker_compose-*.whl')[0]); open('{}', 'wb').write(z.read('compose/config/compose_spec.json'))",
                    cache.display(),
                    schema.display()
                ))
                .status()
                .is_ok_and(|s| s.success());
        if !fetched {
            assert!(
                std::env::var_os("CI").is_none(),
                "the compose schema could not be fetched from PyPI"
            );
            eprintln!("skipped: no compose schema here");
            return;
        }
    }
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corral.toml");
    let p = Project::new(EVERY_FEATURE);
    for file in [demo, p.path().join("corral.toml")] {
        let out = std::process::Command::new(BIN)
            .args([
                "-f",
                file.to_str().unwrap(),
                "export",
                "compose",
                "--image",
                "app:1",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = without_comments(&text);
        let doc = p.path().join("compose.json");
        std::fs::write(&doc, &json).unwrap();
        let script = format!(
            "import json, jsonschema, sys\nv = jsonschema.Draft7Validator(json.load(open('{}')))\nerrors = [e.message for e in v.iter_errors(json.load(open('{}')))]\nprint(errors)\nsys.exit(1 if errors else 0)",
            schema.display(),
            doc.display()
        );
        let check = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// The demo stack of this repository, through systemd-analyze and kubernetes-validate.
#[test]
fn the_demo_stack_exports_validate() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corral.toml");
    let p = Project::new("");
    let dir = p.path().join("units");
    let k8s = p.path().join("k8s.yaml");
    for args in [
        vec!["export", "systemd", "-o", dir.to_str().unwrap()],
        vec![
            "export",
            "kubernetes",
            "--image",
            "demo:1",
            "-o",
            k8s.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(BIN)
            .arg("-f")
            .arg(&demo)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tool = |name: &str| {
        std::process::Command::new(name)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !tool("systemd-analyze") || !tool("kubernetes-validate") {
        assert!(
            std::env::var_os("CI").is_none(),
            "the validators are needed in CI"
        );
        eprintln!("skipped: no validators here");
        return;
    }
    let units: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(units.len() >= 5, "{units:?}");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let validate = std::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&k8s)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

/// An exported YAML file of JSON documents, its `#` comment lines left out.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}
