//! A project in a temp dir, the real binary started in it, and the checks every test shares.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// Helper programs the tests' services run.
const HELPERS: &[(&str, &str)] = &[
    (
        "tree.py",
        r#"
# Ignores SIGTERM, forks two children and a third that calls setsid and forks a grandchild.
# Every process writes its PID to the file in argv[1]. With argv[2], the leader exits after
# that many seconds, leaving its descendants behind.
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
path = sys.argv[1]
def note():
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
for i in range(3):
    if os.fork() == 0:
        if i == 2:
            os.setsid()
            if os.fork() == 0:
                note()
                while True: time.sleep(1)
        note()
        while True: time.sleep(1)
note()
while len(open(path).read().split()) < 5:
    time.sleep(0.01)
print("tree ready", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
    sys.exit(0)
while True: time.sleep(1)
"#,
    ),
    (
        "tcp_server.py",
        r#"
# Listens on $PORT after argv[1] seconds; answers HTTP GETs with 200 "ok".
import os, socket, sys, time, signal
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(16)
print("listening on", os.environ["PORT"], flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except OSError:
        pass
    c.close()
"#,
    ),
    (
        "terms.py",
        r#"
# Counts the SIGTERMs it gets; a moment after the first, prints how many and exits.
import signal, time
n = 0
def count(*_):
    global n
    n += 1
signal.signal(signal.SIGTERM, count)
print("ready", flush=True)
while n == 0:
    time.sleep(0.01)
time.sleep(0.3)
print("terms", n, flush=True)
"#,
    ),
    (
        "drain.py",
        r#"
# On SIGTERM takes argv[1] seconds to finish (a worker draining), then says so and exits.
import signal, sys, time
def stop(*_):
    time.sleep(float(sys.argv[1]))
    print("drained", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(1)
"#,
    ),
];

/// A temp project directory with a `corral.toml` and the helper programs.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// Set for every corral this project starts.
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new(config: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("corral-it-")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("corral.toml"), config).unwrap();
        for (name, text) in HELPERS {
            fs::write(dir.path().join(name), text).unwrap();
        }
        Project {
            dir,
            env: Vec::new(),
        }
    }

    /// Every corral started for this project gets `key=value` in its environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Project {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    /// Start `corral ARGS` in the project directory.
    pub fn start(&self, args: &[&str]) -> Corral {
        self.start_limited(args, None)
    }

    /// Start `corral ARGS` with its open-file limit (soft and hard) set to `nofile`.
    pub fn start_limited(&self, args: &[&str], nofile: Option<u64>) -> Corral {
        use std::os::unix::process::CommandExt;
        let out = self
            .path()
            .join(format!("corral-{}.out", args.join("-").replace('/', "_")));
        let err = out.with_extension("err");
        let mut cmd = Command::new(BIN);
        if let Some(n) = nofile {
            // SAFETY: only setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Corral {
            pid: child.id() as i32,
            child,
            out,
            err,
            done: None,
        }
    }

    /// Processes that belong to this project however they were started: anything running in
    /// its directory with a corral marker (services, even after their corral died), and any
    /// process naming the directory on its command line (a daemon, the keeper).
    pub fn processes(&self) -> Vec<(i32, String)> {
        let root = fs::canonicalize(self.path()).unwrap();
        let root_s = root.display().to_string();
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        for pid in all_pids() {
            if pid == me || is_dead(pid) {
                continue;
            }
            let cmd = fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let marked = fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(b"CORRAL_INSTANCE_ID="));
            let in_dir =
                fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&root));
            if (marked && in_dir) || cmd.contains(&root_s) {
                found.push((pid, cmd));
            }
        }
        found
    }

    /// Nothing of this project is left running (within 5 s); on failure kill it all and panic.
    pub fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.processes();
            if left.is_empty() {
                let cgroups = self.cgroups_left();
                assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
                return;
            }
            if Instant::now() > deadline {
                self.kill_all();
                panic!("processes left behind: {left:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemons' cgroups (recorded in the store) that still exist.
    pub fn cgroups_left(&self) -> Vec<String> {
        let state = self.path().join(".corral");
        if !state.join("state.db").exists() {
            return Vec::new();
        }
        corral_store::Store::open(&state)
            .and_then(|s| s.previous_cgroups())
            .unwrap_or_default()
            .into_iter()
            .filter(|d| Path::new(d).exists())
            .collect()
    }

    fn kill_all(&self) {
        for (pid, _) in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The PID of the project's daemon, from its PID file.
    pub fn daemon_pid(&self) -> i32 {
        self.read(".corral/daemon.pid")
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a daemon PID file")
    }

    /// The PID of the project's log keeper (one runs).
    pub fn keeper_pid(&self) -> i32 {
        self.processes()
            .into_iter()
            .find(|(_, cmd)| cmd.contains("__keeper"))
            .expect("a keeper runs")
            .0
    }

    /// `kill -9` the daemon and wait (bounded) until it is gone; returns its PID.
    pub fn kill_daemon(&self) -> i32 {
        let pid = self.daemon_pid();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        eventually(Duration::from_secs(5), "daemon gone", || is_dead(pid));
        pid
    }

    /// One HTTP/1.1 request over the project's API socket: (status, body).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_body(method, path, "")
    }

    /// The same, with a JSON body.
    pub fn http_body(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let sock = self.path().join(".corral/api.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect to api.sock");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        parse_http(&resp)
    }

    /// Run a client command (or `up -d`) to completion (deadline 60 s); what it starts may
    /// outlive it.
    pub fn run_client(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let mut c = self.start(args);
        let status = c.wait(Duration::from_secs(60));
        (status, c.stdout(), c.stderr())
    }

    /// Run `corral ARGS` to completion (deadline 60 s).
    pub fn run(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let mut c = self.start(args);
        let status = c.wait(Duration::from_secs(60));
        let (out, err) = (c.stdout(), c.stderr());
        assert_no_leftovers(c.pid);
        (status, out, err)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // A failed test must not leak a daemon, a keeper or a service — nor their cgroups.
        self.kill_all();
        for dir in self.cgroups_left() {
            let dir = Path::new(&dir);
            corral_runtime::cgroup::kill(dir);
            corral_runtime::cgroup::wait_empty(dir, Duration::from_secs(2));
            corral_runtime::cgroup::remove(dir);
        }
    }
}

/// Status and body of a raw HTTP/1.1 response (body de-chunked if needed).
pub fn parse_http(resp: &str) -> (u16, String) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

/// A running `corral` process. Dropping it kills it (a failed test must not leak).
pub struct Corral {
    pub pid: i32,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    done: Option<ExitStatus>,
}

impl Corral {
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait until stdout contains `needle`; panic with the output after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            if Instant::now() > deadline {
                panic!(
                    "no `{needle}` within {timeout:?}.\nstdout:\n{out}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).unwrap();
    }

    /// Wait for corral to exit; kill it and panic after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.done = Some(s);
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "corral did not exit within {timeout:?}.\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        if self.done.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            kill_marked(self.pid);
        }
    }
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live (non-zombie) processes started by the corral with this PID: they carry its marker.
pub fn marked_processes(corral_pid: i32) -> Vec<(i32, String)> {
    let prefix = format!("CORRAL_INSTANCE_ID={corral_pid}/");
    let mut found = Vec::new();
    for pid in all_pids() {
        if is_dead(pid) {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(prefix.as_bytes()))
        {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Gone, or a zombie (only waiting to be reaped, by corral or by init).
pub fn is_dead(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// Every process a corral started is gone (within 5 s). On failure, kills them, then panics.
pub fn assert_no_leftovers(corral_pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = marked_processes(corral_pid);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            kill_marked(corral_pid);
            panic!("corral {corral_pid} left processes behind: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_marked(corral_pid: i32) {
    for (pid, _) in marked_processes(corral_pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Zombie children of `pid` (corral must reap what it is parent of).
pub fn zombie_children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for p in all_pids() {
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split(' ');
        let (state, ppid) = (f.next(), f.next().and_then(|x| x.parse::<i32>().ok()));
        if state == Some("Z") && ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Poll `cond` until true; panic with `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of corral's own messages (`corral | …`), without the prefix.
pub fn corral_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("corral"))
        .filter_map(|l| l.split_once("| ").map(|(_, m)| m.to_string()))
        .collect()
}

/// Index of the first corral message containing `needle`; panics if none.
pub fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}` in:\n{}", lines.join("\n")))
}

/// A unit (as the API shows it) is up: running, and its readiness probe passed (or it has none).
/// A project of `n` services `s0`…, each a `sleep 1000`.
pub fn sleep_services(n: usize) -> String {
    (0..n)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n"))
        .collect()
}

pub fn is_up(s: &serde_json::Value) -> bool {
    s["state"] == "running" && s["ready"] == true
}

/// A unit is in `state`; `running` means up (running and ready), as `ps` shows it.
pub fn in_state(s: &serde_json::Value, state: &str) -> bool {
    if state == "running" {
        is_up(s)
    } else {
        s["state"] == state
    }
}

/// Three consecutive free ports, below the range the kernel hands out for `:0` (where other
/// tests' auto ports and outgoing connections land), picked by this process's PID and the clock
/// so that tests running at once choose different ones.
pub fn free_range() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut seed = std::process::id() ^ nanos;
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let p = 20_000 + (seed % 12_000) as u16;
        if (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    panic!("no three free ports in a row");
}

/// A service printing a numbered line every millisecond: for tests that no line is lost.
pub const COUNTER: &str = r#"
[services.counter]
command = ["python3", "-u", "-c", "import itertools, sys, time\nfor i in itertools.count():\n    sys.stdout.write(f'{i}\\n')\n    time.sleep(0.001)"]
"#;

/// The numbers in `counter`'s log, in file order.
pub fn numbers(p: &Project) -> Vec<u64> {
    p.read(".corral/logs/counter.log")
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Where the cgroup v2 hierarchy is mounted and writable by this user, if it is.
pub fn writable_cgroup2() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then(|| left.split_whitespace().nth(4))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new(mount).join(rel.trim_start_matches('/'));
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
        .is_ok()
        .then_some(dir)
}
