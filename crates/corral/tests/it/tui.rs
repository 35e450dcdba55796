//! `corral tui` in a real terminal: tmux runs it against a real stack; keys go in with
//! `send-keys`, the screen comes back with `capture-pane`. Each test has its own tmux server
//! (`-L`), ended with everything in it.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(15);

/// A tmux server of this test's own, with one window running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &std::path::Path, cmd: &str, w: u16, h: u16) -> Option<Tmux> {
        let socket = format!("corral-it-{}", std::process::id());
        let ok = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &w.to_string(), "-y", &h.to_string()])
            .args(["-c", &dir.display().to_string(), cmd])
            .status()
            .ok()?
            .success();
        ok.then_some(Tmux { socket })
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Whether the window (and so the program in it) is still there.
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_for(&self, what: &str) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if last.contains(what) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("`{what}` never showed; the screen:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether tmux is here (in CI it must be: a missing one fails the test there).
fn tmux_here() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tmux is needed (apt-get install tmux)"
    );
    eprintln!("skipped: no tmux here");
    false
}

#[test]
fn the_tui_in_a_real_terminal() {
    if !tmux_here() {
        return;
    }
    let p = Project::new(
        r#"
[services.quiet]
command = ["sleep", "1000"]

[services.chatty]
command = "trap 'echo got usr1' USR1; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"

[templates.box]
command = ["sleep", "1000"]
params = { size = "s" }
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    eventually(T, "both running", || {
        let ps = p.http("GET", "/v1/services").1;
        ps.matches("\"state\":\"running\"").count() == 2
    });
    let bin = env!("CARGO_BIN_EXE_corral");
    let tmux = Tmux::start(p.path(), &format!("NO_COLOR=1 {bin} tui"), 120, 30)
        .expect("tmux starts a session");
    let screen = tmux.wait_for("live");
    assert!(
        screen.contains("quiet") && screen.contains("chatty"),
        "{screen}"
    );
    assert!(
        screen.contains("q quit (the stack keeps running)"),
        "{screen}"
    );

    // Why, with what it depends on; the list sorted.
    tmux.keys(&["i"]);
    tmux.wait_for("quiet is running");
    tmux.wait_for("depends on:");
    tmux.keys(&["i", "o"]);
    tmux.wait_for("sorted by name");
    tmux.keys(&["o", "o", "o", "o", "o"]);
    tmux.wait_for("sorted by order");

    // The second unit's log, followed.
    tmux.keys(&["j", "Enter"]);
    tmux.wait_for("log of chatty · following");
    tmux.wait_for("line ");

    // A restart asks first; `y` restarts it (a new PID).
    let pid_of = || {
        let v: serde_json::Value =
            serde_json::from_str(&p.http("GET", "/v1/services/chatty").1).unwrap();
        v["pid"].as_u64().unwrap_or(0)
    };
    let before = pid_of();
    tmux.keys(&["r"]);
    tmux.wait_for("restart chatty? y/n");
    tmux.keys(&["y"]);
    eventually(T, "chatty restarted", || {
        let now = pid_of();
        now != 0 && now != before
    });
    tmux.wait_for("chatty: running");

    // A signal from the menu.
    tmux.keys(&["x"]);
    tmux.wait_for("signal to chatty: 1 HUP");
    tmux.keys(&["5"]);
    tmux.wait_for("sent SIGUSR1 to chatty");
    tmux.wait_for("got usr1");

    // Every unit's log, interleaved, each line saying whose.
    tmux.keys(&["a"]);
    tmux.wait_for("log of every unit");
    tmux.wait_for("chatty | line");

    // A search in the log, highlighted and jumped to.
    tmux.keys(&["l", "line 1", "Enter"]);
    tmux.wait_for("search: line 1");
    tmux.wait_for("match ");

    // A change made elsewhere shows: stopped from the CLI.
    let (status, _, _) = p.run_client(&["stop", "quiet", "--wait"]);
    assert!(status.success());
    tmux.wait_for("inactive");

    // The help, then a filter.
    tmux.keys(&["?"]);
    tmux.wait_for("any key closes this");
    // (A key right after Escape would read as Alt+key: the help is closed with a plain one.)
    tmux.keys(&["Space"]);
    eventually(T, "the help closed", || {
        !tmux.screen().contains("any key closes this")
    });
    tmux.keys(&["/", "qui", "Enter"]);
    tmux.wait_for("units 1/2 · filter: qui");

    // The instances tab: one made from the template with a parameter, then deleted.
    tmux.keys(&["Escape"]);
    std::thread::sleep(Duration::from_millis(100));
    tmux.keys(&["Tab"]);
    tmux.wait_for("templates: box");
    tmux.keys(&["n"]);
    tmux.wait_for("new instance (TEMPLATE K=V…): box");
    tmux.keys(&["size=xl", "Enter"]);
    tmux.wait_for("ready");
    let made: Vec<serde_json::Value> =
        serde_json::from_str(&p.http("GET", "/v1/instances").1).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["params"][0][1], "xl", "{made:?}");
    let name = made[0]["name"].as_str().unwrap().to_string();
    tmux.keys(&["d"]);
    tmux.wait_for(&format!("delete {name} with its workspace and logs? y/n"));
    tmux.keys(&["y"]);
    eventually(T, "the instance gone", || {
        p.http("GET", "/v1/instances").1 == "[]"
    });

    // The processes tab: a command run, its output shown.
    tmux.keys(&["Tab"]);
    tmux.wait_for("n run, Enter output");
    tmux.keys(&["n"]);
    tmux.wait_for("run (a shell line)");
    tmux.keys(&["echo hello-from-the-tui", "Enter"]);
    tmux.wait_for("process ");
    eventually(T, "its output", || {
        tmux.keys(&["Enter"]);
        std::thread::sleep(Duration::from_millis(100));
        tmux.screen().contains("hello-from-the-tui\n")
            || tmux
                .screen()
                .lines()
                .any(|l| l.trim() == "hello-from-the-tui")
    });
    tmux.keys(&["Tab"]);

    // q leaves the stack as it was.
    tmux.keys(&["q"]);
    eventually(T, "the tui ends", || !tmux.alive());
    let v: serde_json::Value =
        serde_json::from_str(&p.http("GET", "/v1/services/chatty").1).unwrap();
    assert_eq!(v["state"], "running");

    drop(tmux);
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// Without a running corral, it says how to start one and leaves the terminal alone.
#[test]
fn the_tui_without_a_corral_says_what_to_do() {
    let p = Project::new("[services.a]\ncommand = [\"sleep\", \"1\"]\n");
    let (status, _, err) = p.run(&["tui"]);
    assert!(!status.success());
    assert!(err.contains("corral up -d"), "{err}");
}

/// `up --tui`: the stack in the foreground with the TUI instead of the prefixed output; the
/// footer says quitting stops it, and it does.
#[test]
fn up_with_the_tui_stops_the_stack_on_quit() {
    if !tmux_here() {
        return;
    }
    let p = Project::new(
        r#"
[services.one]
command = ["sleep", "1000"]

[services.two]
command = ["sleep", "1000"]
depends_on = ["one"]
"#,
    );
    let bin = env!("CARGO_BIN_EXE_corral");
    let tmux =
        Tmux::start(p.path(), &format!("{bin} up --tui"), 120, 30).expect("tmux starts a session");
    let screen = tmux.wait_for("q quit (stops the stack)");
    assert!(screen.contains("one") && screen.contains("two"), "{screen}");
    eventually(T, "both running", || {
        let s = tmux.screen();
        s.matches(" running ").count() >= 2
    });
    assert_eq!(
        p.processes()
            .iter()
            .filter(|(_, c)| c.contains("sleep"))
            .count(),
        2
    );
    tmux.keys(&["q"]);
    eventually(T, "the stack and the tui end", || !tmux.alive());
    drop(tmux);
    p.assert_nothing_left();
}

/// `corral completions bash` in a real bash: TAB completes a command, and a unit's name asked
/// of the running corral.
#[test]
fn bash_completes_commands_and_unit_names_from_the_running_corral() {
    if !tmux_here() {
        return;
    }
    let p = Project::new(
        r#"
[services.dashboard-api]
command = ["sleep", "1000"]

[services.db]
command = ["sleep", "1000"]
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let Some(t) = Tmux::start(p.path(), "bash --norc --noprofile", 120, 20) else {
        panic!("tmux could not start a session");
    };
    t.keys(&[&format!("source <('{BIN}' completions bash)"), "Enter"]);
    t.keys(&["corral resta", "Tab"]);
    // (tmux trims the space the completion adds at the end of the line)
    t.wait_for("corral restart");
    t.keys(&["da", "Tab"]);
    t.wait_for("corral restart dashboard-api");
    drop(t);
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// `instance create --wait` on a terminal: the running step is a spinner line with its time,
/// redrawn in place and replaced by the step's lasting line when it is done.
#[test]
fn instance_create_wait_spins_on_a_terminal() {
    if !tmux_here() {
        return;
    }
    let p = Project::new(
        r#"
[templates.slow]
command = ["sleep", "30"]
setup = ["sleep 1.5"]
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let bin = env!("CARGO_BIN_EXE_corral");
    // The shell stays after corral ends, so the last screen can be read.
    let tmux = Tmux::start(
        p.path(),
        &format!("{bin} instance create slow --wait; echo exit=$?; sleep 30"),
        100,
        20,
    )
    .expect("tmux starts a session");
    let spinning = tmux.wait_for("sleep 1.5: running");
    let line = spinning
        .lines()
        .find(|l| l.contains("sleep 1.5: running"))
        .unwrap();
    assert!(line.trim_end().ends_with('s'), "the time so far: {line}");
    let done = tmux.wait_for("exit=0");
    assert!(done.contains("[2/2] sh -c sleep 1.5: done"), "{done}");
    assert!(done.contains(": ready"), "{done}");
    assert!(
        !done.contains("running"),
        "the spinner line is replaced, not left behind:\n{done}"
    );
    drop(tmux);
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}
