//! # corral-export: a project written out for other engines
//!
//! Exporters read the validated config model ([`corral_config::Project`]) and nothing at run
//! time: the same corral.toml (or process-compose file, or Procfile) becomes the definitions of
//! an engine that already does its job well. Each exporter returns files (name and text) and
//! what it could not carry over, in words; the CLI writes them.
//!
//! - [`systemd`]: one unit per service, task and target, and a target for the project;
//! - [`kubernetes`]: Deployments, Services, ConfigMaps, Jobs (or init containers);
//! - [`compose`]: a Docker Compose file;
//! - [`nomad`]: a Nomad service job (and a batch job for standalone tasks).
//!
//! The same input gives byte-identical output (stable order), so exports can be committed and
//! diffed.

pub mod compose;
pub mod kubernetes;
pub mod nomad;
pub mod systemd;

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// What an exporter made: the files, and what it could not carry (said to the user).
#[derive(Debug, Default)]
pub struct Export {
    pub files: Vec<File>,
    pub notes: Vec<String>,
}

/// `notes` as comment lines (`# not carried: …`), for the head of an exported file: what was
/// lost is written where the output is read, not only said once on stderr.
pub(crate) fn note_lines(notes: &[String]) -> String {
    notes
        .iter()
        .map(|n| format!("# not carried: {n}\n"))
        .collect()
}

/// Tasks that services wait for with `completed_successfully` (they run before the service, in
/// its pod or group): by service index, and all of them. Every other wait between units the
/// engine `what` cannot order is a note (`what` says what it does instead).
pub(crate) struct Before {
    pub of: std::collections::BTreeMap<usize, Vec<usize>>,
    pub all: std::collections::BTreeSet<usize>,
}

pub(crate) fn tasks_before(
    project: &corral_config::Project,
    what: &str,
    notes: &mut Vec<String>,
) -> Before {
    use corral_engine::{Condition, Kind};
    let mut before = Before {
        of: Default::default(),
        all: Default::default(),
    };
    for (i, spec) in project.plan.units.iter().enumerate() {
        if project.units[i].kind != Kind::Service {
            continue;
        }
        for d in &spec.deps {
            let dep = &project.units[d.unit.0];
            if dep.kind == Kind::Task && d.condition == Condition::CompletedSuccessfully {
                before.of.entry(i).or_default().push(d.unit.0);
                before.all.insert(d.unit.0);
            } else if dep.kind != Kind::Target {
                notes.push(format!(
                    "{}: waits for {} ({}); {what}",
                    project.units[i].name, dep.name, d.condition
                ));
            }
        }
    }
    before
}

/// What every exporter reads of a unit the same way.
pub(crate) mod unit {
    use std::collections::BTreeMap;

    use corral_config::{Command, PortDecl, UnitDef};

    /// The unit's fixed ports (an `auto` port has no value outside corral).
    pub fn fixed_ports(def: &UnitDef) -> Vec<u16> {
        def.ports
            .iter()
            .filter_map(|p| match p {
                PortDecl::Fixed(p) => Some(*p),
                PortDecl::Auto => None,
            })
            .collect()
    }

    /// The note for a unit with an `auto` port, if it has one.
    pub fn auto_port_note(def: &UnitDef) -> Option<String> {
        def.ports.contains(&PortDecl::Auto).then(|| {
            format!(
                "{}: an `auto` port has no value outside corral; set `ports = [N]` to export it",
                def.name
            )
        })
    }

    /// A command as an argv, `{port}` filled; a string command through `/bin/sh -c`.
    pub fn argv(c: &Command, port: Option<u16>) -> Vec<String> {
        match c {
            Command::Argv(v) => v
                .iter()
                .map(|a| corral_config::fill_port(a, port))
                .collect(),
            Command::Shell(s) => vec![
                "/bin/sh".into(),
                "-c".into(),
                corral_config::fill_port(s, port),
            ],
        }
    }

    /// The environment the project declares for the unit: what differs from corral's own.
    pub fn declared_env<'a>(
        def: &'a UnitDef,
        inherited: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a (String, String)> {
        def.env
            .iter()
            .filter(move |(k, v)| inherited.get(k) != Some(v))
    }

    /// `2s`, `500ms`: how these engines write a duration.
    pub fn duration(d: std::time::Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// A signal's name (`SIGINT`), from corral's number.
    pub fn signal_name(n: i32) -> String {
        match n {
            1 => "SIGHUP".into(),
            2 => "SIGINT".into(),
            3 => "SIGQUIT".into(),
            9 => "SIGKILL".into(),
            10 => "SIGUSR1".into(),
            12 => "SIGUSR2".into(),
            15 => "SIGTERM".into(),
            n => n.to_string(),
        }
    }
}
