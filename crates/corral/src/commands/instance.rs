//! `corral instance …`: instances of templates through the daemon's API.

use std::path::Path;
use std::process::ExitCode;

use corral_proto::client::{Method, encode};
use corral_proto::wire;

use super::ctl::{call, cli_error, client};
use super::{CliError, runtime};

pub fn create(
    file: Option<&Path>,
    template: &str,
    params: &[String],
    git: Option<String>,
    zip: Option<&Path>,
    wait: Option<std::time::Duration>,
) -> Result<ExitCode, CliError> {
    let mut map = std::collections::BTreeMap::new();
    for kv in params {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Run(format!("`{kv}` is not NAME=VALUE")))?;
        map.insert(k.to_string(), v.to_string());
    }
    let zip_bytes = match zip {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| CliError::Run(format!("cannot read `{}`: {e}", p.display())))?,
        ),
        None => None,
    };
    let req = wire::InstanceRequest {
        template: template.to_string(),
        params: map,
        git,
        upload: zip_bytes.is_some(),
    };
    let c = client(file)?;
    let rt = runtime()?;
    let inst: serde_json::Value = rt
        .block_on(c.call_with(
            Method::POST,
            "/v1/instances",
            serde_json::to_vec(&req).unwrap_or_default(),
        ))
        .map_err(cli_error)?;
    let name = inst["name"].as_str().unwrap_or_default().to_string();
    if let Some(bytes) = zip_bytes {
        let _: serde_json::Value = rt
            .block_on(c.call_with(
                Method::PUT,
                &format!("/v1/instances/{}/workspace", encode(&name)),
                bytes,
            ))
            .map_err(cli_error)?;
    }
    if let Some(limit) = wait {
        println!("{name} (port {})", inst["port"]);
        return wait_ready(file, &name, limit);
    }
    println!(
        "{name} (port {}); `corral instance show {name}` for its progress",
        inst["port"]
    );
    Ok(ExitCode::SUCCESS)
}

/// `create --wait`: a line per setup step as it moves, until the instance is ready (exit 0) or
/// its preparation failed (exit 1, saying why), or `limit` passes. On a terminal the step that
/// is running is one spinner line, redrawn in place, with its time so far; elsewhere (a pipe, a
/// log) every change of state is a line of its own.
fn wait_ready(
    file: Option<&Path>,
    name: &str,
    limit: std::time::Duration,
) -> Result<ExitCode, CliError> {
    use std::io::{IsTerminal, Write};
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let tty = std::io::stdout().is_terminal();
    let deadline = std::time::Instant::now() + limit;
    let mut said: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    // The running step the spinner is on, and since when.
    let mut spinning: Option<(String, std::time::Instant)> = None;
    let mut frame = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let i: serde_json::Value = call(
            file,
            Method::GET,
            &format!("/v1/instances/{}", encode(name)),
        )?;
        let steps = i["steps"].as_array().cloned().unwrap_or_default();
        let mut running = None;
        for (n, s) in steps.iter().enumerate() {
            let step = s["name"].as_str().unwrap_or_default();
            let state = s["state"].as_str().unwrap_or_default().to_string();
            let counter = format!("[{}/{}]", n + 1, steps.len());
            if tty && state == "running" {
                running = Some((counter, step.to_string()));
                continue;
            }
            if state == "pending" || said.get(step) == Some(&state) {
                continue;
            }
            let detail = s["detail"].as_str().unwrap_or_default();
            if tty {
                // The spinner's line becomes this step's lasting line.
                let _ = write!(out, "\r\x1b[2K");
            }
            let _ = writeln!(
                out,
                "  {counter} {step}: {state}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            );
            said.insert(step.to_string(), state);
        }
        if let Some((counter, step)) = running {
            let since = match &spinning {
                Some((s, t)) if *s == step => *t,
                _ => std::time::Instant::now(),
            };
            let _ = write!(
                out,
                "\r\x1b[2K{} {counter} {step}: running {:.1}s",
                FRAMES[frame % FRAMES.len()],
                since.elapsed().as_secs_f64()
            );
            frame += 1;
            spinning = Some((step, since));
        } else if spinning.take().is_some() {
            let _ = write!(out, "\r\x1b[2K");
        }
        let _ = out.flush();
        match i["state"].as_str().unwrap_or_default() {
            "ready" => {
                let _ = writeln!(out, "{name}: ready");
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => {
                return Err(CliError::Run(format!(
                    "{name}: preparation failed: {}",
                    i["error"].as_str().unwrap_or("see `corral instance show`")
                )));
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            if spinning.is_some() {
                let _ = writeln!(out);
            }
            return Err(CliError::Run(format!(
                "{name} was not ready within {}",
                humantime::format_duration(limit)
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn list(file: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    let all: Vec<serde_json::Value> = call(file, Method::GET, "/v1/instances")?;
    if json {
        super::ctl::print_json(&all);
        return Ok(ExitCode::SUCCESS);
    }
    for i in &all {
        println!(
            "{}  {}  port {}  {}",
            i["name"].as_str().unwrap_or_default(),
            i["state"].as_str().unwrap_or_default(),
            i["port"],
            i["workspace"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(file: Option<&Path>, name: &str, json: bool) -> Result<ExitCode, CliError> {
    let i: serde_json::Value = call(
        file,
        Method::GET,
        &format!("/v1/instances/{}", encode(name)),
    )?;
    if json {
        super::ctl::print_json(&i);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} (template {}, port {})",
        name,
        i["state"].as_str().unwrap_or_default(),
        i["template"].as_str().unwrap_or_default(),
        i["port"]
    );
    if let Some(e) = i["error"].as_str() {
        println!("  error: {e}");
    }
    for s in i["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {} {}",
            s["state"].as_str().unwrap_or_default(),
            s["name"].as_str().unwrap_or_default(),
            s["detail"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(file: Option<&Path>, name: &str) -> Result<ExitCode, CliError> {
    let d: wire::Done = call(
        file,
        Method::DELETE,
        &format!("/v1/instances/{}", encode(name)),
    )?;
    println!("{}", d.message);
    Ok(ExitCode::SUCCESS)
}
