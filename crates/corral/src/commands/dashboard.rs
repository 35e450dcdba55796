//! `corral dashboard`: the link that signs a browser in to the running corral's web dashboard.
//! The daemon is asked to listen on loopback TCP first if it does not yet (a free port), so this
//! one command is all it takes.

use std::path::Path;
use std::process::{ExitCode, Stdio};

use corral_proto::client::Method;

use super::ctl::call;
use super::{CliError, state_dir};

pub fn run(file: Option<&Path>, no_open: bool, read_only: bool) -> Result<ExitCode, CliError> {
    let listening: serde_json::Value = call(file, Method::POST, "/v1/listen")?;
    let addr = listening["addr"]
        .as_str()
        .ok_or_else(|| CliError::Run("the daemon did not say where it listens".into()))?
        .to_string();
    let state = state_dir(file)?;
    let token_path = state.join(if read_only { "token.read" } else { "token" });
    let token = corral_runtime::statedir::read_private(&token_path)
        .ok()
        .flatten()
        .ok_or_else(|| {
            CliError::Run(format!(
                "cannot read `{}` (it is made by the daemon, mode 0600: run this as the daemon's user)",
                token_path.display()
            ))
        })?;
    let url = format!("http://{addr}/login?token={}", token.trim());
    println!("{url}");
    // A browser where there is a desktop to show it; a plain link otherwise (ssh, CI).
    let desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || std::env::var_os("BROWSER").is_some();
    if !no_open && desktop {
        let opener = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".into());
        let opened = std::process::Command::new(&opener)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match opened {
            // Reaped on a thread: the browser (or its launcher) may stay a while.
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
                eprintln!("corral: opened the dashboard with `{opener}`");
            }
            Err(e) => eprintln!("corral: cannot start `{opener}` ({e}); open the link above"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
