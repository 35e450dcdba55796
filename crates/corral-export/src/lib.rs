//! # corral-export: a project written out for other engines
//!
//! Exporters read the validated config model ([`corral_config::Project`]) and nothing at run
//! time: the same corral.toml (or process-compose file, or Procfile) becomes the definitions of
//! an engine that already does its job well. Each exporter returns files (name and text) and
//! what it could not carry over, in words; the CLI writes them.
//!
//! - [`systemd`]: one unit per service, task and target, and a target for the project;
//! - [`kubernetes`]: Deployments, Services, ConfigMaps, Jobs (or init containers);
//! - [`compose`]: a Docker Compose file.
//!
//! The same input gives byte-identical output (stable order), so exports can be committed and
//! diffed.

pub mod compose;
pub mod kubernetes;
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
