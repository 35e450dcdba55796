//! `corral import FILE`: a process-compose file or a Procfile written out as an equivalent
//! corral.toml — what `corral up` would run from FILE, with what it could not carry listed as
//! comments (and on stderr). The result is read back and checked before it is written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use corral_config::formats::{self, Format};

use super::CliError;

/// What `corral import` takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The process-compose file or Procfile to convert.
    pub file: PathBuf,
    /// Where to write (default: corral.toml beside FILE; `-` for stdout).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// A Procfile's formation (`web=2,worker=1`), written out as that many units.
    #[arg(short = 'm', long, value_name = "TYPE=N,...", value_parser = formations)]
    pub formation: Option<std::collections::BTreeMap<String, usize>>,
}

fn formations(s: &str) -> Result<std::collections::BTreeMap<String, usize>, String> {
    formats::procfile::formation(s)
}

pub fn run(args: &ImportArgs) -> Result<ExitCode, CliError> {
    let file = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let text = std::fs::read_to_string(&file)
        .map_err(|e| CliError::Run(format!("cannot read `{}`: {e}", file.display())))?;
    let format = Format::of(&file, &text);
    if format == Format::Toml {
        return Err(CliError::Run(format!(
            "`{}` is a corral.toml already (import reads process-compose files and Procfiles)",
            file.display()
        )));
    }
    let options = formats::ReadOptions {
        formation: args.formation.clone().unwrap_or_default(),
        ..Default::default()
    };
    let inherited: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    // The source must be valid as it is: its errors name its own lines.
    let project =
        corral_config::load_with(&file, &inherited, &options).map_err(CliError::Config)?;
    let root = file.parent().unwrap_or(Path::new("."));
    let (doc, warnings) = formats::document(format, &text, root, &inherited, &options)
        .map_err(|_| CliError::Run("the file changed while it was read".into()))?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut header = vec![
        format!(
            "Converted from {name} ({}) by `corral import`.",
            format.describe()
        ),
        "Values of ${VAR} were taken from the environment and .env at the time of the import."
            .to_string(),
    ];
    if !warnings.is_empty() {
        header.push(String::new());
        header.push("Not carried over:".into());
        for w in &warnings {
            let (line, col) = match &w.span {
                corral_config::Span::File(r) => corral_config::line_col(&text, r.start),
                corral_config::Span::Field { .. } => (0, 0),
            };
            header.push(format!("  {name}:{line}:{col}: {}", w.message));
        }
    }
    let out = formats::emit::toml(&doc, &header);
    let target = match &args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(root.join(corral_config::FILE_NAME)),
    };
    // What is written must read back as the same project.
    let check_path = target
        .clone()
        .unwrap_or_else(|| root.join(corral_config::FILE_NAME));
    let written = corral_config::parse_project(&check_path, &out, &inherited).map_err(|e| {
        CliError::Run(format!(
            "the converted file does not validate (a bug in corral import, please report it):\n{e}"
        ))
    })?;
    if written.units.len() != project.units.len() {
        return Err(CliError::Run(format!(
            "the converted file has {} units where `{}` has {} (a bug in corral import)",
            written.units.len(),
            file.display(),
            project.units.len()
        )));
    }
    eprint!("{}", project.warnings());
    match target {
        None => {
            std::io::stdout()
                .write_all(out.as_bytes())
                .map_err(|e| CliError::Run(format!("cannot write to stdout: {e}")))?;
        }
        Some(path) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true);
            if args.force {
                opts.create(true).truncate(true);
            } else {
                opts.create_new(true);
            }
            let mut f = opts.open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CliError::Run(format!(
                        "`{}` exists; pass --force to replace it, or -o OUT to write elsewhere",
                        path.display()
                    ))
                } else {
                    CliError::Run(format!("cannot write `{}`: {e}", path.display()))
                }
            })?;
            f.write_all(out.as_bytes())
                .map_err(|e| CliError::Run(format!("cannot write `{}`: {e}", path.display())))?;
            eprintln!(
                "corral: wrote {} ({} units; {} not carried over)",
                path.display(),
                written.units.len(),
                warnings.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
