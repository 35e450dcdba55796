//! CPU and memory per service tree and per ad-hoc process: in `ps`, `top` and `/metrics`.

use std::time::Duration;

use crate::harness::*;

const STACK: &str = r#"
[services.idle]
command = ["sleep", "1000"]

[services.busy]
command = ["python3", "-c", "while True: pass"]

[services.tree]
# A shell whose child holds 64 MiB: the tree counts both.
command = "python3 -c 'x = bytearray(64 << 20); import time; time.sleep(1000)' & exec sleep 1000"
"#;

fn usage(list: &serde_json::Value, name: &str) -> serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()["usage"]
        .clone()
}

#[test]
fn ps_top_and_prometheus_show_cpu_and_memory_of_whole_trees() {
    let p = Project::new(STACK);
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let ps = |p: &Project| -> serde_json::Value {
        let (status, out, err) = p.run_client(&["ps", "--json"]);
        assert!(status.success(), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    eventually(Duration::from_secs(15), "the tree's memory", || {
        let u = usage(&ps(&p), "tree");
        u["processes"] == 2 && u["rss_bytes"].as_u64().unwrap_or(0) > 64 << 20
    });
    // CPU is measured between two looks; give the busy one time to spin.
    eventually(
        Duration::from_secs(15),
        "busy uses CPU, idle does not",
        || {
            let list = ps(&p);
            let busy = usage(&list, "busy")["cpu_percent"].as_f64().unwrap_or(0.0);
            let idle = usage(&list, "idle")["cpu_percent"]
                .as_f64()
                .unwrap_or(100.0);
            busy > 20.0 && idle < 5.0
        },
    );
    let (status, out, _) = p.run_client(&["top", "-n", "1"]);
    assert!(status.success());
    assert!(
        out.starts_with("NAME") && out.contains("CPU") && out.contains("busy"),
        "{out}"
    );

    let (status, _, _) = p.run_client(&["exec", "-d", "--", "sleep", "100"]);
    assert!(status.success());
    let (status, text) = p.http("GET", "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "# TYPE corral_service_up gauge",
        "corral_service_up{service=\"busy\",kind=\"service\"} 1",
        "corral_service_rss_bytes{service=\"tree\"} ",
        "corral_service_processes{service=\"tree\"} 2",
        "corral_service_restarts{service=\"idle\",kind=\"service\"} 0",
        "corral_proc_rss_bytes{proc=\"p1\"} ",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}
