//! `corral exec` and `corral proc …`: ad-hoc processes through the daemon's API.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use corral_proto::client::{Method, Streamed, encode};
use corral_proto::wire;

use super::ctl::{call, cli_error, client};
use super::{CliError, runtime};

pub struct ExecArgs {
    pub detach: bool,
    pub timeout: Option<String>,
    pub key: Option<String>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub command: Vec<String>,
}

pub fn run(file: Option<&Path>, args: ExecArgs) -> Result<ExitCode, CliError> {
    let mut env = std::collections::BTreeMap::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Run(format!("`{kv}` is not NAME=VALUE")))?;
        env.insert(k.to_string(), v.to_string());
    }
    let req = wire::ProcRequest {
        command: serde_json::json!(args.command),
        cwd: args.cwd,
        env,
        timeout: args.timeout,
        key: args.key,
        ..wire::ProcRequest::default()
    };
    let body = serde_json::to_vec(&req).unwrap_or_default();
    let c = client(file)?;
    let rt = runtime()?;
    if args.detach {
        let proc: wire::Proc = rt
            .block_on(c.call_with(Method::POST, "/v1/procs", body))
            .map_err(cli_error)?;
        println!("{}", proc.id);
        return Ok(ExitCode::SUCCESS);
    }
    // One request: the process starts and its output streams back, led by its record.
    let mut id: Option<String> = None;
    let mut last: Option<wire::Proc> = None;
    let mut each = |event: &str, data: &str| match event {
        "proc" => {
            id = serde_json::from_str::<wire::Proc>(data).ok().map(|p| p.id);
            true
        }
        "line" => {
            if let Ok(line) = serde_json::from_str::<wire::Chunk>(data) {
                if line.stream == "err" {
                    let _ = writeln!(std::io::stderr(), "{}", line.text);
                } else {
                    let mut out = std::io::stdout();
                    let _ = writeln!(out, "{}", line.text);
                    let _ = out.flush();
                }
            }
            true
        }
        "omitted" => {
            eprintln!("corral: [… part of the output was not kept: {data} …]");
            true
        }
        "exit" => {
            last = serde_json::from_str(data).ok();
            false
        }
        _ => true,
    };
    let answer = rt
        .block_on(c.stream_with(Method::POST, "/v1/procs?follow=true", body, &mut each))
        .map_err(cli_error)?;
    if let Streamed::Plain(record) = answer {
        // A daemon of an earlier version started it and answered with its record: its output
        // is a second request.
        let proc: wire::Proc = serde_json::from_slice(&record)
            .map_err(|e| CliError::Run(format!("bad answer from the daemon: {e}")))?;
        rt.block_on(c.stream(&format!("/v1/procs/{}/output", proc.id), &mut each))
            .map_err(cli_error)?;
        id = Some(proc.id);
    }
    let Some(end) = last else {
        return Err(CliError::Run(match id {
            Some(id) => {
                format!("lost the output stream of {id}; `corral proc show {id}` has its record")
            }
            None => "lost the answer to starting the process; `corral proc ls` lists what \
                     runs"
                .to_string(),
        }));
    };
    // Like a shell: the exit code, or 128 + the signal that ended it.
    let code = end.exit_code.or(end.signal.map(|s| 128 + s)).unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn print_proc(p: &wire::Proc) {
    let status = match (p.exit_code, p.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "-".into(),
    };
    println!(
        "{}  {}  pid {}  {}{}  `{}`",
        p.id,
        p.state,
        p.pid,
        status,
        if p.timed_out { " (timed out)" } else { "" },
        p.command
    );
}

pub fn list(file: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    let all: Vec<wire::Proc> = call(file, Method::GET, "/v1/procs")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        all.iter().for_each(print_proc);
    }
    Ok(ExitCode::SUCCESS)
}

fn show_output(p: &wire::Proc) {
    print_proc(p);
    let o = &p.output;
    print!("{}", o.head);
    if o.omitted_bytes > 0 {
        println!(
            "\n[… {} of {} bytes omitted …]",
            o.omitted_bytes, o.original_bytes
        );
    }
    print!("{}", o.tail);
}

pub fn show(file: Option<&Path>, id: &str, json: bool) -> Result<ExitCode, CliError> {
    let p: wire::Proc = call(file, Method::GET, &format!("/v1/procs/{}", encode(id)))?;
    if json {
        super::ctl::print_json(&p);
        return Ok(ExitCode::SUCCESS);
    }
    show_output(&p);
    Ok(ExitCode::SUCCESS)
}

pub fn wait(
    file: Option<&Path>,
    id: &str,
    timeout: &str,
    json: bool,
) -> Result<ExitCode, CliError> {
    let p: wire::Proc = call(
        file,
        Method::GET,
        &format!("/v1/procs/{}/wait?timeout={}", encode(id), encode(timeout)),
    )?;
    if json {
        super::ctl::print_json(&p);
        return Ok(ExitCode::SUCCESS);
    }
    show_output(&p);
    Ok(ExitCode::SUCCESS)
}

pub fn input(file: Option<&Path>, id: &str, data: &str, close: bool) -> Result<ExitCode, CliError> {
    let body = serde_json::to_vec(&wire::Input {
        data: data.to_string(),
        close,
    })
    .unwrap_or_default();
    let c = client(file)?;
    let done: wire::Done = runtime()?
        .block_on(c.call_with(
            Method::POST,
            &format!("/v1/procs/{}/input", encode(id)),
            body,
        ))
        .map_err(cli_error)?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

pub fn kill(file: Option<&Path>, id: &str, signal: &str) -> Result<ExitCode, CliError> {
    let p: wire::Proc = call(
        file,
        Method::POST,
        &format!("/v1/procs/{}/signal?signal={}", encode(id), encode(signal)),
    )?;
    print_proc(&p);
    Ok(ExitCode::SUCCESS)
}

pub fn remove(file: Option<&Path>, id: &str) -> Result<ExitCode, CliError> {
    let d: wire::Done = call(file, Method::DELETE, &format!("/v1/procs/{}", encode(id)))?;
    println!("{}", d.message);
    Ok(ExitCode::SUCCESS)
}

pub fn clear(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let d: wire::Done = call(file, Method::DELETE, "/v1/procs")?;
    println!("{}", d.message);
    Ok(ExitCode::SUCCESS)
}
