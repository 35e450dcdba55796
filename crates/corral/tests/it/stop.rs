//! Stopping: nothing a service started may outlive it.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

fn pids(p: &Project) -> Vec<i32> {
    p.read("pids")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

#[test]
fn stop_kills_a_term_ignoring_tree_with_a_setsid_grandchild() {
    let p = Project::new(
        r#"
[services.tree]
command = ["python3", "tree.py", "pids"]
stop = { timeout = "1s" }
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("tree ready", T);
    let pids = pids(&p);
    assert_eq!(pids.len(), 5, "leader, 3 children, 1 grandchild");
    let stop = Instant::now();
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let took = stop.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "waited for the grace period ({took:?})"
    );
    let out = c.stdout();
    assert!(
        out.contains("still running 1s after the stop signal; killed"),
        "{out}"
    );
    for pid in pids {
        assert!(is_dead(pid), "pid {pid} survived");
    }
    assert_no_leftovers(c.pid);
}

/// A stop signal reaches each process once, however many ways corral finds it (its process
/// group, its cgroup, the tree recorded of it): many programs take a second SIGTERM as "stop
/// now". Forty units: half a counter that is its unit's leader, half one that its leader (a
/// shell ignoring SIGTERM) started in the same group; each counts the SIGTERMs it gets. (With
/// the cgroup read after the group was signalled, 6–19 of 60 leaders got two.)
#[test]
fn a_stop_signal_reaches_each_process_once() {
    let config: String = (0..40)
        .map(|i| {
            let command = match i % 2 {
                0 => "exec python3 terms.py",
                _ => "trap '' TERM; python3 terms.py & wait",
            };
            format!("[services.u{i}]\ncommand = \"{command}\"\n")
        })
        .collect();
    let p = Project::new(&config);
    let mut c = p.start(&["up"]);
    eventually(T, "every counter ready", || {
        c.stdout().matches("| ready").count() == 40
    });
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let out = c.stdout();
    let counts: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split("| terms ").nth(1))
        .collect();
    assert_eq!(counts.len(), 40, "{out}");
    assert!(counts.iter().all(|n| *n == "1"), "{out}");
    assert_no_leftovers(c.pid);
}

/// `up` of one service `app` running `command` whose child prints `ready`, once it has; None
/// (the test skipped) where no cgroup v2 is writable: without a cgroup, what a stopped leader
/// leaves is killed at its exit.
fn up_with_a_child(command: &str, timeout: &str) -> Option<(Project, Corral)> {
    if writable_cgroup2().is_none() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return None;
    }
    let p = Project::new(&format!(
        "[services.app]\ncommand = \"{command}\"\nstop = {{ timeout = \"{timeout}\" }}\n"
    ));
    let c = p.start(&["up"]);
    c.wait_for("| ready", T);
    Some((p, c))
}

/// Stopped, a leader that exits at once leaves its child (same group, the stop signal
/// received too) to finish its own stop within the grace: it is not killed at the leader's
/// exit, and the unit is stopped when the child is done. (Where cgroups can be made: without
/// one, what the leader leaves is killed at its exit.)
#[test]
fn what_a_stopped_leader_leaves_finishes_its_own_stop() {
    let Some((_p, mut c)) = up_with_a_child("python3 drain.py 0.5 & wait", "20s") else {
        return;
    };
    let stop = Instant::now();
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let took = stop.elapsed();
    let out = c.stdout();
    let drained = out
        .find("| drained")
        .unwrap_or_else(|| panic!("the child was cut off: {out}"));
    let stopped = out.find("app: stopped").expect("app stopped");
    assert!(
        drained < stopped,
        "stopped before its child was done: {out}"
    );
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(
        took < Duration::from_secs(10),
        "waited for the grace: {took:?}\n{out}"
    );
    assert_no_leftovers(c.pid);
}

/// A restart waits the same way: the new process starts once the old one's child has finished.
#[test]
fn a_restart_starts_anew_once_what_the_old_leader_left_has_finished() {
    let Some((p, mut c)) = up_with_a_child("python3 drain.py 0.5 & wait", "20s") else {
        return;
    };
    let (status, _, err) = p.run_client(&["restart", "app", "--wait"]);
    assert!(status.success(), "{err}");
    // `--wait` answers once it runs; the terminal's line may come a moment later.
    eventually(T, "the second start shown", || {
        c.stdout().matches("app: started").count() == 2
    });
    let out = c.stdout();
    let drained = out.find("| drained").expect("the old child finished");
    let restarted = out.rfind("app: started").unwrap();
    assert!(
        drained < restarted,
        "started before the old child was done: {out}"
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// What a stopped leader leaves and does not end by itself is killed at the end of the grace.
#[test]
fn what_a_stopped_leader_leaves_is_killed_when_the_grace_ends() {
    let command = "(trap '' TERM; echo ready; exec sleep 4244) & wait";
    let Some((_p, mut c)) = up_with_a_child(command, "1s") else {
        return;
    };
    let stop = Instant::now();
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let took = stop.elapsed();
    let out = c.stdout();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        out.contains("still running 1s after the stop signal; killed"),
        "{out}"
    );
    assert_no_leftovers(c.pid);
}

#[test]
fn a_leader_that_exits_takes_its_whole_tree_with_it() {
    leader_exits_and_its_tree_goes(false);
}

/// The same without cgroups (the fallback): the group is signalled, and the setsid escapee is
/// found by its marker.
#[test]
fn without_cgroups_a_leader_that_exits_takes_its_whole_tree_with_it() {
    leader_exits_and_its_tree_goes(true);
}

fn leader_exits_and_its_tree_goes(without_cgroups: bool) {
    let mut p = Project::new(
        r#"
[services.tree]
command = ["python3", "tree.py", "pids", "0.2"]
restart = "never"

[services.bystander]
command = ["sleep", "30"]
"#,
    );
    if without_cgroups {
        p = p.with_env("CORRAL_CGROUP", "off");
    }
    let mut c = p.start(&["up"]);
    c.wait_for("tree: exited (exit code 0)", T);
    let pids = pids(&p);
    assert_eq!(pids.len(), 5);
    // While corral still runs: the group and the setsid escapee are gone, and reaped.
    eventually(Duration::from_secs(5), "the tree is gone", || {
        pids.iter().all(|p| is_dead(*p))
    });
    eventually(Duration::from_secs(5), "no zombie children", || {
        zombie_children(c.pid).is_empty()
    });
    assert_eq!(
        marked_processes(c.pid).len(),
        1,
        "only the bystander is left"
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

#[test]
fn a_second_interrupt_kills_at_once() {
    let p = Project::new(
        r#"
[services.stubborn]
command = "trap '' TERM; echo up; while true; do sleep 0.1; done"
stop = { timeout = "60s" }
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("stubborn | up", T);
    c.signal(Signal::SIGINT);
    c.wait_for("stubborn: stopping", T);
    let start = Instant::now();
    c.signal(Signal::SIGINT);
    c.wait(T);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "did not wait for the 60 s grace"
    );
    assert!(
        c.stdout()
            .contains("second interrupt: killing everything now")
    );
    assert_no_leftovers(c.pid);
}

#[test]
fn sigterm_and_sighup_stop_gracefully() {
    for sig in [Signal::SIGTERM, Signal::SIGHUP] {
        let p = Project::new("[services.s]\ncommand = \"echo up; exec sleep 30\"\n");
        let mut c = p.start(&["up"]);
        c.wait_for("| up", T);
        c.signal(sig);
        assert!(c.wait(T).success(), "{sig}");
        assert!(
            c.stdout().contains("s: stopped (signal 15)"),
            "{sig}: {}",
            c.stdout()
        );
        assert_no_leftovers(c.pid);
    }
}

/// A service paused (`corral kill -s STOP`, a debugger) gets SIGCONT after its stop signal, as
/// systemd sends it: it stops gracefully at once, instead of holding the signal until SIGKILL
/// at the end of the grace.
#[test]
fn a_paused_service_stops_gracefully_and_at_once() {
    let p = Project::new(
        "[services.app]\ncommand = \"exec python3 terms.py\"\nstop = { timeout = \"60s\" }\n",
    );
    let mut c = p.start(&["up"]);
    c.wait_for("| ready", T);
    let (status, out, err) = p.run_client(&["kill", "-s", "STOP", "app"]);
    assert!(status.success(), "{out}{err}");
    let pid = p
        .processes()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("terms.py"))
        .map(|(pid, _)| pid)
        .expect("the service");
    eventually(T, "the service paused", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('T')))
    });
    let asked = Instant::now();
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let took = asked.elapsed();
    let out = c.stdout();
    assert!(out.contains("| terms 1"), "no graceful stop:\n{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{out}");
    assert_no_leftovers(c.pid);
}

/// The same for a process adopted from an earlier daemon (not our child, watched through a
/// pidfd): stopped, what its leader leaves in its cgroup finishes its own stop within the grace
/// before the unit is stopped — it used to be killed at the leader's exit.
#[test]
fn what_an_adopted_leader_leaves_finishes_its_own_stop() {
    if writable_cgroup2().is_none() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    }
    let p = Project::new(
        "[services.app]\ncommand = \"python3 drain.py 0.5 & wait\"\nstop = { timeout = \"20s\" }\n",
    );
    let ok = |args: &[&str]| {
        let (status, out, err) = p.run_client(args);
        assert!(status.success(), "corral {args:?}: {out}{err}");
    };
    let app = || {
        let (_, body) = p.http("GET", "/v1/services/app");
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()
    };
    ok(&["up", "-d"]);
    eventually(T, "app ready", || {
        p.read(".corral/logs/app.log").contains("ready")
    });
    p.kill_daemon();
    ok(&["up", "-d"]);
    eventually(T, "app adopted", || app()["adopted"] == true);
    let asked = Instant::now();
    ok(&["stop", "app", "--wait"]);
    assert!(
        asked.elapsed() >= Duration::from_millis(450),
        "stopped in {:?}, before its child had drained",
        asked.elapsed()
    );
    eventually(T, "drained", || {
        p.read(".corral/logs/app.log").contains("drained")
    });
    ok(&["down"]);
    p.assert_nothing_left();
}
