//! systemd units: a `.service` per service (`Type=exec`) and task (`Type=oneshot`,
//! `RemainAfterExit=yes`), a `.target` per target, and `PREFIX.target` that wants them all.
//!
//! What maps, and how:
//! - the command: an argv with its program resolved to an absolute path (on the unit's `PATH`);
//!   a string command through `/bin/sh -c`; `{port}` with a fixed port;
//! - `workdir` → `WorkingDirectory=`; the environment corral.toml and its env files declare
//!   (not corral's own) → `Environment=`; `PORT` for a fixed port;
//! - `depends_on` → `Requires=` + `After=` (`completed` → `Wants=` + `After=`);
//! - the restart policy → `Restart=`, `RestartSec=` (the first delay), `StartLimitBurst=` /
//!   `StartLimitIntervalSec=` (the budget within `reset_after`);
//! - the stop signal and timeout → `KillSignal=`, `TimeoutStopSec=`, `KillMode=control-group`;
//!   `user`/`group`/`umask` → `User=`/`Group=`/`UMask=`.
//!
//! What systemd does not have is said in a comment in the unit and in the notes: readiness and
//! liveness probes (`healthy` waits only for the start), `log_ready`, backoff growth (systemd
//! 254's `RestartSteps=` is not in every distribution yet), `auto` ports, templates,
//! `shutdown_command` is `ExecStop=`.

use std::collections::BTreeMap;
use std::path::Path;

use corral_config::{Project, UnitDef};
use corral_engine::{Condition, Kind, RestartMode, UnitSpec};

use crate::unit::{argv, auto_port_note, declared_env, duration as secs, fixed_ports, signal_name};
use crate::{Export, File};

pub struct Options {
    /// Units for a user's manager (`systemctl --user`): the project target is wanted by
    /// `default.target` instead of `multi-user.target`, and `User=` is left out.
    pub user: bool,
    /// The start of every unit's name (`PREFIX-NAME.service`) and the project target's name.
    pub prefix: String,
    /// The environment corral itself has: what a unit's environment holds beyond it is what
    /// the project declares.
    pub inherited: BTreeMap<String, String>,
}

/// One word of `ExecStart=`: quoted when it must be; `%` and `$` doubled (systemd expands
/// specifiers and variables there).
fn word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%$".contains(c));
    if plain {
        escaped
    } else {
        let inner = escaped
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .replace('\t', "\\t");
        format!("\"{inner}\"")
    }
}

/// An `Environment=` assignment, quoted (specifiers doubled; variables are not expanded there).
fn assignment(k: &str, v: &str) -> String {
    let kv = format!("{k}={v}")
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{kv}\"")
}

/// `path` without `.` and `..` (lexically: links are kept, as `/bin/sh` should be).
fn normalize(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `program` as an absolute path, found on `path` as `execvp` would.
fn resolve(program: &str, path: &str, workdir: &Path) -> Option<String> {
    if program.contains('/') {
        let p = workdir.join(program);
        // systemd takes only normalized paths (no `..`).
        return Some(normalize(&p).display().to_string());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(program);
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .ok()
            .filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .map(|_| p.display().to_string())
    })
}

/// What a unit's name becomes.
fn unit_name(prefix: &str, def: &UnitDef) -> String {
    let ext = if def.kind == Kind::Target {
        "target"
    } else {
        "service"
    };
    format!("{prefix}-{}.{ext}", def.name)
}

/// The files for `project`.
pub fn export(project: &Project, opts: &Options) -> Export {
    let mut out = Export::default();
    let target = format!("{}.target", opts.prefix);
    let mut all = Vec::new();
    for (i, def) in project.units.iter().enumerate() {
        let spec = &project.plan.units[i];
        let name = unit_name(&opts.prefix, def);
        let text = match def.kind {
            Kind::Target => target_unit(project, def, spec, opts, &target),
            _ => service_unit(project, def, spec, opts, &target, &mut out.notes),
        };
        all.push(name.clone());
        out.files.push(File { name, text });
    }
    if !project.templates.is_empty() {
        out.notes.push(format!(
            "templates ({}) are made into instances at run time: not exported",
            project
                .templates
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let wanted_by = if opts.user {
        "default.target"
    } else {
        "multi-user.target"
    };
    let mut t = String::new();
    t.push_str(&format!(
        "# The project {} (from {}), exported by `corral export systemd`.\n",
        opts.prefix,
        project.file.display()
    ));
    t.push_str(&format!(
        "[Unit]\nDescription=The {} stack\nWants={}\n\n[Install]\nWantedBy={wanted_by}\n",
        opts.prefix,
        all.join(" ")
    ));
    out.files.push(File {
        name: target,
        text: t,
    });
    out
}

fn deps(
    project: &Project,
    spec: &UnitSpec,
    opts: &Options,
    lines: &mut Vec<String>,
    notes: &mut Vec<String>,
    me: &str,
) {
    for d in &spec.deps {
        let dep = &project.units[d.unit.0];
        let n = unit_name(&opts.prefix, dep);
        match d.condition {
            Condition::Completed => lines.push(format!("Wants={n}")),
            _ => lines.push(format!("Requires={n}")),
        }
        lines.push(format!("After={n}"));
        match d.condition {
            Condition::Healthy if dep.readiness.is_some() => {
                lines.push(format!(
                    "# {me} waits for {} to be healthy in corral; systemd only orders it after the start",
                    dep.name
                ));
                notes.push(format!(
                    "{me}: `{} = \"healthy\"` becomes an order after its start (systemd has no readiness probe)",
                    dep.name
                ));
            }
            Condition::LogReady => {
                lines.push(format!(
                    "# {me} waits for {}'s log_ready line in corral; systemd only orders it after the start",
                    dep.name
                ));
                notes.push(format!(
                    "{me}: `{} = \"log_ready\"` becomes an order after its start",
                    dep.name
                ));
            }
            _ => {}
        }
    }
}

fn target_unit(
    project: &Project,
    def: &UnitDef,
    spec: &UnitSpec,
    opts: &Options,
    target: &str,
) -> String {
    let mut lines = vec![
        "[Unit]".to_string(),
        format!("Description={}", def.description().unwrap_or(&def.name)),
    ];
    let mut notes = Vec::new();
    deps(project, spec, opts, &mut lines, &mut notes, &def.name);
    lines.push(String::new());
    lines.push("[Install]".into());
    lines.push(format!("WantedBy={target}"));
    lines.join("\n") + "\n"
}

fn service_unit(
    project: &Project,
    def: &UnitDef,
    spec: &UnitSpec,
    opts: &Options,
    target: &str,
    notes: &mut Vec<String>,
) -> String {
    let me = def.name.as_str();
    let mut unit = vec![
        "[Unit]".to_string(),
        format!(
            "Description={}",
            def.description()
                .map_or_else(|| format!("{me} ({})", opts.prefix), str::to_string)
        ),
    ];
    deps(project, spec, opts, &mut unit, notes, me);
    let restart = &spec.restart;
    if def.kind == Kind::Service && restart.mode != RestartMode::Never {
        // corral gives up after max_restarts within reset_after.
        unit.push(format!(
            "StartLimitIntervalSec={}",
            secs(restart.reset_after)
        ));
        unit.push(format!("StartLimitBurst={}", restart.max_restarts + 1));
    }

    let mut svc = vec!["[Service]".to_string()];
    if def.kind == Kind::Task {
        svc.push("Type=oneshot".into());
        svc.push("RemainAfterExit=yes".into());
    } else {
        svc.push("Type=exec".into());
    }
    let fixed = fixed_ports(def).first().copied();
    if let Some(note) = auto_port_note(def) {
        svc.push(format!(
            "# {me} has an `auto` port in corral: give it a fixed one here (PORT)"
        ));
        notes.push(note);
    }
    let env_path = def
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| opts.inherited.get("PATH").cloned())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let argv: Vec<String> = def
        .command
        .as_ref()
        .map(|c| argv(c, fixed))
        .unwrap_or_default();
    // A command line: its program resolved to an absolute path, every word quoted.
    let mut line = |argv: &[String]| -> Option<String> {
        let first = argv.first()?;
        let program = resolve(first, &env_path, &def.workdir).unwrap_or_else(|| {
            notes.push(format!(
                "{me}: `{first}` is not on PATH here; the unit names it as written"
            ));
            first.clone()
        });
        let mut words = vec![word(&program)];
        words.extend(argv[1..].iter().map(|a| word(a)));
        Some(words.join(" "))
    };
    if let Some(l) = line(&argv) {
        svc.push(format!("ExecStart={l}"));
    }
    if let Some(c) = def.shutdown_command()
        && let Some(l) = line(&c.to_argv(fixed))
    {
        svc.push(format!("ExecStop={l}"));
    }
    // systemd takes only normalized paths (a project read with `-f ../x` has `..` in it).
    let workdir = normalize(&def.workdir);
    svc.push(format!(
        "WorkingDirectory={}",
        word(&workdir.display().to_string())
    ));
    // The environment the project declares: what differs from corral's own.
    for (k, v) in declared_env(def, &opts.inherited) {
        svc.push(format!("Environment={}", assignment(k, v)));
    }
    if let Some(p) = fixed {
        svc.push(format!(
            "Environment={}",
            assignment("PORT", &p.to_string())
        ));
    }
    if def.kind == Kind::Service {
        svc.push(format!(
            "Restart={}",
            match restart.mode {
                RestartMode::Always => "always",
                RestartMode::OnFailure => "on-failure",
                RestartMode::Never => "no",
            }
        ));
        if restart.mode != RestartMode::Never {
            svc.push(format!("RestartSec={}", secs(restart.backoff_initial)));
            svc.push(format!(
                "# corral doubles the delay up to {} (systemd 254+: RestartSteps=, RestartMaxDelaySec=)",
                secs(restart.backoff_max)
            ));
        }
    }
    svc.push(format!("KillSignal={}", signal_name(spec.stop_signal)));
    svc.push(format!("TimeoutStopSec={}", secs(spec.stop_grace)));
    svc.push("KillMode=control-group".into());
    if let Some(id) = &def.identity
        && !opts.user
    {
        svc.push(format!("User={}", id.user));
        svc.push(format!("Group={}", id.gid));
    }
    if let Some(m) = def.umask {
        svc.push(format!("UMask={m:04o}"));
    }
    if def.readiness.is_some() || def.liveness.is_some() {
        svc.push(format!(
            "# {me}'s readiness/liveness probes have no systemd equivalent (a notify service could report READY=1)"
        ));
        notes.push(format!("{me}: probes are not exported"));
    }
    if def.log_ready.is_some() {
        notes.push(format!("{me}: `log_ready` is not exported"));
    }

    let mut text = format!(
        "# {me} of {}, exported by `corral export systemd` from {}.\n",
        opts.prefix,
        project.file.display()
    );
    text.push_str(&unit.join("\n"));
    text.push_str("\n\n");
    text.push_str(&svc.join("\n"));
    text.push_str(&format!("\n\n[Install]\nWantedBy={target}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(word("/usr/bin/sleep"), "/usr/bin/sleep");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word("100%"), "100%%");
        assert_eq!(word("$HOME"), "$$HOME");
        assert_eq!(word("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(assignment("A", "1 2%"), "\"A=1 2%%\"");
    }
}
