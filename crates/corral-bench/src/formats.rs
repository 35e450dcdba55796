//! Reading a large process-compose file: `corral validate` and `corral import` of 1,000
//! processes, against parsing the same file with the YAML parser alone (the baseline).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{median, ms, ratio};

/// A process-compose file of `n` processes: each with an environment, a probe, and a
/// dependency on the one before.
fn big_file(n: usize) -> String {
    let mut s = String::from("version: \"0.5\"\nenvironment:\n  - \"STAGE=bench\"\nprocesses:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  p{i}:\n    command: \"sleep 1000 # ${{STAGE}} {i}\"\n    environment:\n      - \"INDEX={i}\"\n      - \"NAME=p{i}\"\n    readiness_probe:\n      exec:\n        command: \"true\"\n      period_seconds: 5\n    availability:\n      restart: on_failure\n      max_restarts: 3\n"
        ));
        if i > 0 {
            s.push_str(&format!(
                "    depends_on:\n      p{}:\n        condition: process_started\n",
                i - 1
            ));
        }
    }
    s
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    let v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median(v)
}

pub fn run(corral: &Path, n: usize) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("process-compose.yaml");
    let text = big_file(n);
    std::fs::write(&file, &text).expect("write the file");
    println!(
        "read a {n}-process process-compose.yaml ({} KiB; median of 5)",
        text.len() / 1024
    );
    let yaml_only = time(5, || {
        let events = saphyr_parser::Parser::new_from_str(&text).count();
        assert!(events > n);
    });
    let inherited = std::collections::BTreeMap::new();
    let in_process = time(5, || {
        let p = corral_config::load_with(&file, &inherited, &Default::default())
            .expect("the file is valid");
        assert_eq!(p.units.len(), n);
    });
    let cli = |args: &[&str]| {
        time(5, || {
            let out = Command::new(corral)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run corral");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    let validate = cli(&["validate"]);
    let import = cli(&["import", "process-compose.yaml", "-o", "-"]);
    let spawn_true = time(5, || {
        Command::new("true").status().expect("true");
    });
    println!("  YAML parser alone   {:>8}", ms(yaml_only));
    println!(
        "  corral's reader     {:>8}   ratio {:.1}x   (read, rewrite, validate, resolve; in process)",
        ms(in_process),
        ratio(in_process, yaml_only)
    );
    println!(
        "  corral validate     {:>8}   corral import {:>8}   (whole commands; spawning `true` takes {})",
        ms(validate),
        ms(import),
        ms(spawn_true)
    );
}
