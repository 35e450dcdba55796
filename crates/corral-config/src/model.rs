//! The validated config: what the runtime needs to run each unit. The engine's half (edges,
//! timings, policies) is in [`Project::plan`].

use std::path::{Path, PathBuf};

use corral_engine::{Kind, Plan, ProbeTiming};
use regex::Regex;

/// A loaded, validated `corral.toml`.
#[derive(Clone, Debug)]
pub struct Project {
    /// The config file.
    pub file: PathBuf,
    /// Its directory: relative paths are resolved against it.
    pub root: PathBuf,
    /// Where logs and state go: `<root>/.corral`.
    pub state_dir: PathBuf,
    /// One entry per unit, in the same order as `plan.units`.
    /// Shared with the file's validated units kept for run-time definitions (one copy each).
    pub units: Vec<std::sync::Arc<UnitDef>>,
    /// Shared with the engine that runs it.
    pub plan: std::sync::Arc<Plan>,
    /// Service shapes for instances made at run time.
    pub templates: Vec<Template>,
    /// What was read and validated, to add definitions to without reading the file again.
    pub base: std::sync::Arc<crate::lower::Base>,
    /// The run-time definitions this project was made with, each as validated (before its
    /// dependencies were resolved): the next `with_definitions` validates only what is new or
    /// changed, so adding the 1,000th instance does not validate the 999 before it again.
    pub(crate) added: std::sync::Arc<
        Vec<(
            crate::lower::Definition,
            std::sync::Arc<crate::validate::Draft>,
        )>,
    >,
}

impl Project {
    pub fn unit(&self, name: &str) -> Option<&UnitDef> {
        self.plan.find(name).map(|id| &*self.units[id.0])
    }

    /// The file a unit's log is written to: its `log_file`, or `.corral/logs/NAME.log`. Rotated
    /// files are this path with `.1`, `.2`, … appended.
    pub fn log_path(&self, def: &UnitDef) -> PathBuf {
        log_path(&self.state_dir, &def.name, def.log_file())
    }

    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }
}

/// How to run a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Executed directly, no shell.
    Argv(Vec<String>),
    /// Run by `sh -c`.
    Shell(String),
}

impl Command {
    /// The argv to execute, with `{port}` replaced. A string that is only words (no quotes,
    /// variables, globs, operators or redirections; see [`plain_words`]) is executed directly,
    /// split at its spaces, as `sh -c` would have run it: without a shell in between that waits
    /// for it. That is a process less per service and per exec probe, the unit's PID is the
    /// program's own, and a program that is not there fails to start with that said, instead of
    /// a shell exiting 127.
    pub fn to_argv(&self, port: Option<u16>) -> Vec<String> {
        match self {
            Command::Argv(v) => v.iter().map(|a| fill_port(a, port)).collect(),
            Command::Shell(s) => {
                let s = fill_port(s, port);
                plain_words(&s).unwrap_or_else(|| vec!["sh".into(), "-c".into(), s])
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            Command::Argv(v) => v.join(" "),
            Command::Shell(s) => s.clone(),
        }
    }
}

/// A shell command line's words, when the shell would do nothing with it but split it at
/// blanks and run the first word as a program: every byte is a letter, digit, blank or one of
/// `-_./:,+@%=`, and the first word is neither an assignment (`A=1 cmd`) nor one of the
/// shell's own words (`cd`, `exec`, `if`, `.`, …), which have no program of their name or
/// mean something else to it. None otherwise: the line is for `sh -c`.
pub fn plain_words(line: &str) -> Option<Vec<String>> {
    // The shell's keywords and built-in commands (POSIX, and dash's and bash's common ones).
    const SHELL_WORDS: &[&str] = &[
        ".", ":", "alias", "bg", "break", "builtin", "case", "cd", "chdir", "command", "continue",
        "do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false",
        "fc", "fg", "fi", "for", "function", "getopts", "hash", "if", "in", "jobs", "kill", "let",
        "local", "printf", "pwd", "read", "readonly", "return", "select", "set", "shift", "source",
        "test", "then", "time", "times", "trap", "true", "type", "typeset", "ulimit", "umask",
        "unalias", "unset", "until", "wait", "while",
    ];
    let plain = |b: u8| b.is_ascii_alphanumeric() || b" \t-_./:,+@%=".contains(&b);
    if !line.bytes().all(plain) {
        return None;
    }
    let words: Vec<String> = line
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    let first = words.first()?;
    if first.contains('=') || SHELL_WORDS.contains(&first.as_str()) {
        return None;
    }
    Some(words)
}

/// `on_ready`, `on_failure`, `on_exit`, `on_restart`: each run with the unit's name, state and
/// exit in its environment (`CORRAL_UNIT`, `CORRAL_STATE`, `CORRAL_EXIT`).
#[derive(Clone, Debug)]
pub struct Hooks {
    pub on_ready: Option<Command>,
    pub on_failure: Option<Command>,
    pub on_exit: Option<Command>,
    pub on_restart: Option<Command>,
    /// How long a hook may run before it is killed (`hook_timeout`, default 30 s).
    pub timeout: std::time::Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            on_ready: None,
            on_failure: None,
            on_exit: None,
            on_restart: None,
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

impl Hooks {
    pub fn any(&self) -> bool {
        self.on_ready.is_some()
            || self.on_failure.is_some()
            || self.on_exit.is_some()
            || self.on_restart.is_some()
    }
}

/// One of `kill_filters`, as written and as a pattern.
#[derive(Clone, Debug)]
pub struct KillFilter {
    pub text: String,
    pub pattern: Regex,
}

impl KillFilter {
    /// `comm` is the process's name (`/proc/PID/comm`), `cmdline` its words joined by spaces.
    pub fn matches(&self, comm: &str, cmdline: &str) -> bool {
        comm == self.text || self.pattern.is_match(cmdline)
    }
}

/// A cron pattern (seconds optional), read in the local time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// As written.
    pub pattern: String,
    pub cron: croner::Cron,
}

impl Schedule {
    /// The next time it is due after `now`.
    pub fn next_after(
        &self,
        now: &chrono::DateTime<chrono::Local>,
    ) -> Option<chrono::DateTime<chrono::Local>> {
        self.cron.find_next_occurrence(now, false).ok()
    }
}

/// What a unit watches: `watch` patterns, less `watch_ignore` ones (and, always, anything
/// under `.git`, `target`, `node_modules` and `.corral`).
#[derive(Clone, Debug)]
pub struct Watch {
    /// As written, for people.
    pub patterns: Vec<String>,
    pub ignore_patterns: Vec<String>,
    pub matcher: globset::GlobSet,
    pub ignore: globset::GlobSet,
}

impl Watch {
    /// Whether a change to `rel` (a path relative to the project) concerns the unit.
    pub fn wants(&self, rel: &Path) -> bool {
        self.matcher.is_match(rel) && !self.ignore.is_match(rel)
    }
}

/// Directories never watched: what version control, builds and packages churn.
pub const WATCH_NEVER: &[&str] = &[".git", "target", "node_modules", ".corral"];

/// See [`Project::log_path`].
pub fn log_path(state_dir: &Path, name: &str, log_file: Option<&Path>) -> PathBuf {
    match log_file {
        Some(f) => f.to_path_buf(),
        None => state_dir.join("logs").join(format!("{name}.log")),
    }
}

/// Replace `{port}` with the unit's first port (declared or allocated).
pub fn fill_port(s: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if s.contains("{port}") => s.replace("{port}", &p.to_string()),
        _ => s.to_string(),
    }
}

/// A declared port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortDecl {
    Fixed(u16),
    /// Any free port, chosen at start and kept across restarts; given as `PORT`.
    Auto,
}

/// What a health probe checks.
#[derive(Clone, Debug)]
pub enum Check {
    /// A TCP connect to `host:port` succeeds.
    Tcp { addr: String },
    /// An HTTP(S) GET answers with `status` (default: any 2xx or 3xx) and, if set, a body
    /// containing `body`.
    Http {
        url: String,
        status: Option<u16>,
        body: Option<String>,
        /// For `https://`: accept any certificate (a local server's self-signed one).
        insecure: bool,
    },
    /// The command exits 0 and, if set, its output contains `output`.
    Exec {
        command: Command,
        output: Option<String>,
    },
    /// A line of the unit's output matches.
    Log { pattern: Regex },
    /// The unit says `READY=1` on its `NOTIFY_SOCKET` (systemd's sd_notify protocol).
    Notify,
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub check: Check,
    pub timing: ProbeTiming,
}

/// Log settings of one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Lines kept in memory (default 1000). Accepted but unused since the keeper writes the logs: queries read the files. Kept so
    /// configs stay valid; an in-memory ring may come back for fast tails.
    pub ring_lines: usize,
    /// A log file is rotated when it grows past this. Default 10 MiB.
    pub max_file_bytes: u64,
    /// Rotated files kept (`name.log.1` …). Default 3.
    pub keep_files: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            ring_lines: 1000,
            max_file_bytes: 10 << 20,
            keep_files: 3,
        }
    }
}

/// The runtime's half of one unit.
#[derive(Clone, Debug)]
pub struct UnitDef {
    pub name: String,
    pub kind: Kind,
    /// None for targets.
    pub command: Option<Command>,
    pub workdir: PathBuf,
    /// The complete environment for the process, inherited variables included, sorted by name.
    /// `PORT` is added at start when the unit has ports. Shared: units with the same
    /// environment (most of a big stack) hold one copy (see `lower::share_envs`).
    pub env: std::sync::Arc<[(String, String)]>,
    pub ports: Vec<PortDecl>,
    /// Kill whatever holds a declared port before starting.
    pub kill_others: bool,
    /// `limits`: resource limits set in its process (name as in `prlimit`: nofile, nproc, core,
    /// memlock, as, stack, fsize, cpu), each soft and hard alike. `u64::MAX` is unlimited.
    pub limits: Vec<(String, u64)>,
    /// `limits.memory` and `limits.cpus`: cgroup limits, where a cgroup with those
    /// controllers is delegated to corral (else not applied, and `why` says so).
    pub cgroup_limits: CgroupLimits,
    pub readiness: Option<Box<Probe>>,
    pub liveness: Option<Box<Probe>>,
    pub log_ready: Option<Regex>,
    pub log: LogSettings,
    /// Commands run when it becomes ready, fails, exits, is restarted; none for most units
    /// (boxed: inline they were a quarter of a unit's definition).
    pub hooks: Option<Box<Hooks>>,
    /// A task's `schedule`: when it runs while corral runs.
    pub schedule: Option<Box<Schedule>>,
    /// It gets a `NOTIFY_SOCKET` (readiness `notify`, or a `watchdog`).
    pub notify: bool,
    /// Files whose change restarts it (a task: runs it again), relative to the project.
    pub watch: Option<Box<Watch>>,
    /// The command starts a daemon and exits (process-compose's `is_daemon`): an exit 0 is not
    /// the end; the unit runs while what it started runs.
    pub daemon: bool,
    /// Stop signal to the main process only, not its whole process group (SIGKILL after the
    /// grace period still goes to everything).
    pub stop_parent_only: bool,
    /// Run as this user (and group), instead of corral's own. None: as corral.
    pub identity: Option<Box<Identity>>,
    /// The umask of its processes. None: corral's.
    pub umask: Option<u32>,
    /// Not started by `up` unless named (or needed by a unit that is); `start` starts it.
    pub disabled: bool,
    /// What few units have, boxed (a unit without any is 150 bytes smaller, which adds up at
    /// thousands of units); read through [`UnitDef::kill_filters`] and the others below.
    pub extras: Option<Box<Extras>>,
}

/// The parts of a unit's definition that few units have (see [`UnitDef::extras`]).
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Before a start, processes matching one of these are killed with their trees
    /// (`kill_filters`: a process name exactly, or a regex over the command line).
    pub kill_filters: Vec<KillFilter>,
    /// Where its log is written, instead of `.corral/logs/NAME.log` (`log_file`, absolute).
    pub log_file: Option<PathBuf>,
    /// Run instead of sending the stop signal; the process still has `stop.timeout` to exit
    /// before SIGKILL.
    pub shutdown_command: Option<Command>,
    /// A label to start and list units by (`up --namespace NS`).
    pub namespace: Option<String>,
    pub description: Option<String>,
    /// The container image for `corral export kubernetes` (ignored on one machine).
    pub image: Option<String>,
}

impl UnitDef {
    /// Its extras, made when the first one is set (as the definition is read).
    pub fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    pub fn kill_filters(&self) -> &[KillFilter] {
        self.extras.as_ref().map_or(&[], |e| &e.kill_filters)
    }

    pub fn log_file(&self) -> Option<&Path> {
        self.extras.as_ref()?.log_file.as_deref()
    }

    pub fn shutdown_command(&self) -> Option<&Command> {
        self.extras.as_ref()?.shutdown_command.as_ref()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.extras.as_ref()?.namespace.as_deref()
    }

    pub fn description(&self) -> Option<&str> {
        self.extras.as_ref()?.description.as_deref()
    }

    pub fn image(&self) -> Option<&str> {
        self.extras.as_ref()?.image.as_deref()
    }
}

/// Who a unit's processes run as (`user`, `group`): resolved when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, from the user database (as `login` would set them).
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Why an identity cannot be used: which key is wrong (`user` or `group`), what is wrong, and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub key: &'static str,
    pub message: String,
    pub help: &'static str,
}

impl Identity {
    /// Who `user` (a name or uid; corral's own user when None) and `group` (its primary group
    /// when None) are on this machine, with the user's supplementary groups. corral must be
    /// root to become anyone else.
    pub fn lookup(user: Option<&str>, group: Option<&str>) -> Result<Identity, IdentityError> {
        use nix::unistd::{Gid, Group, Uid, User};
        let me = Uid::effective();
        let found = match user {
            Some(name) => match name.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(name),
            },
            None => User::from_uid(me),
        };
        let Ok(Some(u)) = found else {
            return Err(IdentityError {
                key: "user",
                message: format!("no user `{}` on this machine", user.unwrap_or("(corral's)")),
                help: "a name from /etc/passwd (or a number)",
            });
        };
        let gid = match group {
            Some(name) => {
                let found = match name.parse::<u32>() {
                    Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                    Err(_) => Group::from_name(name),
                };
                match found {
                    Ok(Some(g)) => g.gid,
                    _ => {
                        return Err(IdentityError {
                            key: "group",
                            message: format!("no group `{name}` on this machine"),
                            help: "a name from /etc/group (or a number)",
                        });
                    }
                }
            }
            None => u.gid,
        };
        if !me.is_root() && (u.uid != me || gid != Gid::effective()) {
            return Err(IdentityError {
                key: if user.is_some() { "user" } else { "group" },
                message: format!(
                    "corral runs as uid {me}, so it cannot run this as `{}`",
                    u.name
                ),
                help: "run corral as root (it drops to the user for this unit), or remove `user`/`group`",
            });
        }
        let groups = std::ffi::CString::new(u.name.clone())
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, gid).ok())
            .map_or_else(
                || vec![gid.as_raw()],
                |g| g.iter().map(|g| g.as_raw()).collect(),
            );
        Ok(Identity {
            user: u.name,
            uid: u.uid.as_raw(),
            gid: gid.as_raw(),
            groups,
            home: u.dir,
        })
    }
}

/// `[templates.NAME]`: what an instance of it runs, with placeholders still in its strings.
#[derive(Clone, Debug)]
pub struct Template {
    pub name: String,
    /// The keys of the service table (not `params`, `setup`, `files`, `port_range`,
    /// `setup_timeout`), placeholders still in its strings.
    pub body: crate::node::Table,
    /// Parameters with their defaults.
    pub params: Vec<(String, String)>,
    /// Commands run once, in the workspace, before an instance first starts.
    pub setup: Vec<Command>,
    /// Files written into the workspace: relative path → content.
    pub files: Vec<(String, String)>,
    /// Where instance ports come from. None: any free port.
    pub port_range: Option<(u16, u16)>,
    /// How long one setup step (or the `git clone` of the workspace) may take. Default 10m.
    pub setup_timeout: std::time::Duration,
}

/// Replace every `{key}` of `vars` in `s`.
pub fn fill(s: &str, vars: &[(String, String)]) -> String {
    substitute(s, vars, |v| v.to_string())
}

/// Like [`fill`], for a string run by `sh -c`: every value is quoted for the shell, so a
/// parameter like `x; rm -rf ~` stays one word. (Write `{name}`, not `"{name}"`.)
pub fn fill_shell(s: &str, vars: &[(String, String)]) -> String {
    substitute(s, vars, shell_quote)
}

/// One pass over `s`: a value is never read again for placeholders of its own.
fn substitute(s: &str, vars: &[(String, String)], quote: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let var = after
            .find('}')
            .and_then(|close| vars.iter().find(|(k, _)| *k == after[..close]));
        match var {
            Some((k, v)) => {
                out.push_str(&quote(v));
                rest = &after[k.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{name}` placeholders in `s` (a name: a letter or `_`, then letters, digits, `_`), not
/// counting `${NAME}`, which is the environment's.
pub fn placeholders(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(open) = s[i..].find('{').map(|o| o + i) {
        i = open + 1;
        if open > 0 && bytes[open - 1] == b'$' {
            continue;
        }
        let Some(close) = s[i..].find('}').map(|c| c + i) else {
            break;
        };
        let name = &s[i..close];
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            out.push(name);
            i = close + 1;
        }
    }
    out
}

/// `s` as one word for `sh`: in single quotes, each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Template {
    /// The setup commands as argv lists, placeholders filled (quoted in shell strings).
    pub fn setup_argv(&self, vars: &[(String, String)], port: u16) -> Vec<Vec<String>> {
        self.setup
            .iter()
            .map(|c| match c {
                Command::Argv(argv) => argv
                    .iter()
                    .map(|a| fill(&fill_port(a, Some(port)), vars))
                    .collect(),
                Command::Shell(s) => vec![
                    "sh".into(),
                    "-c".into(),
                    fill_shell(&fill_port(s, Some(port)), vars),
                ],
            })
            .collect()
    }
}

/// A unit's cgroup limits (`limits.memory`, `limits.cpus`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgroupLimits {
    /// memory.max, in bytes.
    pub memory: Option<u64>,
    /// cpu.max as a number of CPUs (0.5 = half of one).
    pub cpus: Option<f64>,
}

impl CgroupLimits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none()
    }
}
