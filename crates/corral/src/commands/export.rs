//! `corral export systemd`: the project written out for another engine (see `corral-export`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CliError, load_project_with};

/// What `corral export` takes.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ExportTarget {
    /// systemd units: one per service, task and target, and a target for the project.
    Systemd {
        /// Units for a user's manager (`systemctl --user`).
        #[arg(long)]
        user: bool,
        /// Where to write them (default: ./systemd); `-` prints them.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// The start of every unit's name (default: the project directory's name).
        #[arg(long, value_name = "NAME")]
        prefix: Option<String>,
    },
    /// Kubernetes manifests: a Deployment (and Service, ConfigMap) per service, Jobs or init
    /// containers for tasks; one YAML stream for `kubectl apply -f`.
    Kubernetes {
        /// The image of every container without its own `image` in corral.toml.
        #[arg(long, value_name = "IMAGE")]
        image: String,
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Where to write the stream (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Nomad job specifications: a service job (a group per service), and a batch job for
    /// tasks no service waits for.
    Nomad {
        /// The datacenter the jobs run in.
        #[arg(long, value_name = "DC", default_value = "dc1")]
        datacenter: String,
        /// Where to write them (default: ./nomad); `-` prints them.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// A Docker Compose file: services with depends_on conditions, healthchecks, restart,
    /// ports, environment, stop signal and grace.
    Compose {
        /// The image of every service without its own `image` in corral.toml.
        #[arg(long, value_name = "IMAGE")]
        image: String,
        /// Where to write it (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Say what was not carried, then write the files into `output` (default `default_dir`), or
/// print them for `-`.
fn write_dir(
    export: &corral_export::Export,
    output: Option<&Path>,
    default_dir: &str,
) -> Result<(), CliError> {
    for n in &export.notes {
        eprintln!("corral: not carried: {n}");
    }
    match output {
        Some(p) if p.as_os_str() == "-" => {
            for f in &export.files {
                println!("# ---- {} ----\n{}", f.name, f.text);
            }
        }
        out => {
            let dir = out.map_or_else(|| PathBuf::from(default_dir), Path::to_path_buf);
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::Run(format!("cannot create `{}`: {e}", dir.display())))?;
            for f in &export.files {
                let path = dir.join(&f.name);
                std::fs::write(&path, &f.text).map_err(|e| {
                    CliError::Run(format!("cannot write `{}`: {e}", path.display()))
                })?;
            }
            eprintln!(
                "corral: wrote {} files to {}",
                export.files.len(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Say what was not carried, then write the one file to `output` (or stdout).
fn write_one(export: &corral_export::Export, output: Option<&Path>) -> Result<(), CliError> {
    for n in &export.notes {
        eprintln!("corral: not carried: {n}");
    }
    let text = &export.files[0].text;
    match output {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::write(path, text)
                .map_err(|e| CliError::Run(format!("cannot write `{}`: {e}", path.display())))?;
            eprintln!("corral: wrote {}", path.display());
        }
        _ => print!("{text}"),
    }
    Ok(())
}

/// The project directory's name, as a name other engines take.
fn default_prefix(project: &corral_config::Project) -> String {
    let dir = project
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corral".into());
    // A unit name takes letters, digits and `-_.`; the rest becomes `-`.
    dir.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn run(
    file: Option<&Path>,
    read: &corral_config::formats::ReadOptions,
    target: &ExportTarget,
) -> Result<ExitCode, CliError> {
    let project = load_project_with(file, read)?;
    let (user, output, prefix) = match target {
        ExportTarget::Systemd {
            user,
            output,
            prefix,
        } => (user, output, prefix),
        ExportTarget::Kubernetes {
            image,
            namespace,
            output,
        } => {
            let opts = corral_export::kubernetes::Options {
                image: image.clone(),
                namespace: namespace.clone(),
                prefix: default_prefix(&project),
                inherited: std::env::vars().collect(),
            };
            let export = corral_export::kubernetes::export(&project, &opts);
            write_one(&export, output.as_deref())?;
            return Ok(ExitCode::SUCCESS);
        }
        ExportTarget::Nomad { datacenter, output } => {
            let opts = corral_export::nomad::Options {
                prefix: default_prefix(&project),
                datacenter: datacenter.clone(),
                inherited: std::env::vars().collect(),
            };
            let export = corral_export::nomad::export(&project, &opts);
            write_dir(&export, output.as_deref(), "nomad")?;
            return Ok(ExitCode::SUCCESS);
        }
        ExportTarget::Compose { image, output } => {
            let opts = corral_export::compose::Options {
                image: image.clone(),
                prefix: default_prefix(&project),
                inherited: std::env::vars().collect(),
            };
            let export = corral_export::compose::export(&project, &opts);
            write_one(&export, output.as_deref())?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let prefix = prefix.clone().unwrap_or_else(|| default_prefix(&project));
    let opts = corral_export::systemd::Options {
        user: *user,
        prefix,
        inherited: std::env::vars().collect(),
    };
    let export = corral_export::systemd::export(&project, &opts);
    write_dir(&export, output.as_deref(), "systemd")?;
    if output.as_deref().is_none_or(|p| p.as_os_str() != "-") {
        eprintln!(
            "corral: install them: copy them to /etc/systemd/system/ (or ~/.config/systemd/user/ with --user), `systemctl daemon-reload`, `systemctl start {}.target`",
            opts.prefix
        );
    }
    Ok(ExitCode::SUCCESS)
}
