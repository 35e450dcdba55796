//! `corral mcp`: a Model Context Protocol server on stdin/stdout, so an AI assistant drives the
//! running corral with tools: list units, a unit's status, start/stop/restart, logs, run a
//! command (an ad-hoc process, its output back), and instances (list, create, delete).
//!
//! MCP over stdio is JSON-RPC 2.0, one message per line. Written by hand: the server needs
//! `initialize`, `tools/list`, `tools/call` and `ping`, and every tool is a call of corral's own
//! HTTP API, which the CLI already makes. Nothing but protocol goes to stdout; the log of a
//! failing call goes into its result, marked as an error, so the assistant can read it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use corral_proto::client::{Client, Method, encode};
use corral_proto::wire;
use serde_json::{Value, json};

use super::CliError;
use super::ctl::{cli_error, client};

/// The protocol revisions understood; the newest is offered when the client asks for another.
const VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

pub fn run(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let server = Server {
        file: file.map(Path::to_path_buf),
        rt: super::runtime_threaded()?,
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(msg) => server.answer(&msg),
            Err(e) => Some(error(Value::Null, -32700, &format!("not JSON: {e}"))),
        };
        if let Some(reply) = reply {
            let _ = writeln!(out, "{reply}");
            let _ = out.flush();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

struct Server {
    file: Option<PathBuf>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    /// The reply to one message; none for a notification.
    fn answer(&self, msg: &Value) -> Option<Value> {
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            return Some(error(
                id.unwrap_or(Value::Null),
                -32600,
                "not a request: no `method`",
            ));
        };
        // Notifications (`notifications/initialized`, `…/cancelled`) need no answer.
        let id = id?;
        let params = msg.get("params").cloned().unwrap_or(json!({}));
        let result = match method {
            "initialize" => {
                let asked = params["protocolVersion"].as_str().unwrap_or("");
                let version = VERSIONS
                    .iter()
                    .find(|v| **v == asked)
                    .unwrap_or(&VERSIONS[0]);
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "corral", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Tools of the corral process supervisor running this project: its units (services, tasks), their logs, ad-hoc commands and instances."
                })
            }
            "ping" => json!({}),
            "tools/list" => json!({"tools": tools()}),
            "tools/call" => {
                let name = params["name"].as_str().unwrap_or("");
                let args = params.get("arguments").cloned().unwrap_or(json!({}));
                match self.call_tool(name, &args) {
                    Ok(text) => {
                        json!({"content": [{"type": "text", "text": text}], "isError": false})
                    }
                    Err(text) => {
                        json!({"content": [{"type": "text", "text": text}], "isError": true})
                    }
                }
            }
            other => return Some(error(id, -32601, &format!("no method `{other}`"))),
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    fn client(&self) -> Result<Client, String> {
        client(self.file.as_deref()).map_err(|e| e.to_string())
    }

    /// A call of corral's API: its JSON answer, or what went wrong in words.
    fn api(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let c = self.client()?;
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.rt
            .block_on(c.call_with::<Value>(method, path, body))
            .map_err(|e| cli_error(e).to_string())
    }

    fn call_tool(&self, name: &str, args: &Value) -> Result<String, String> {
        let text = |k: &str| -> Result<String, String> {
            args[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{k}` (a string) is needed"))
        };
        let pretty = |v: Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        match name {
            "list_units" => {
                let list = self.api(Method::GET, "/v1/services?metrics=true", None)?;
                let units: Vec<wire::Service> =
                    serde_json::from_value(list).map_err(|e| e.to_string())?;
                Ok(units
                    .iter()
                    .map(|u| {
                        let pid = u.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
                        format!("{} ({}): {}{pid}", u.name, u.kind, u.state_text())
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "unit_status" => {
                let name = text("name")?;
                self.api(
                    Method::GET,
                    &format!("/v1/services/{}", encode(&name)),
                    None,
                )
                .map(pretty)
            }
            "start" | "stop" | "restart" => {
                let unit = text("name")?;
                let wait = args["wait"].as_bool().unwrap_or(true);
                let v = self.api(
                    Method::POST,
                    &format!("/v1/services/{}/{name}?wait={wait}", encode(&unit)),
                    None,
                )?;
                Ok(v["message"].as_str().unwrap_or_default().to_string())
            }
            "logs" => {
                let unit = text("name")?;
                let tail = args["tail"].as_u64().unwrap_or(100).min(5000);
                let mut path = format!("/v1/services/{}/logs?tail={tail}", encode(&unit));
                if let Some(g) = args["grep"].as_str() {
                    path.push_str(&format!("&grep={}", encode(g)));
                }
                let lines: Vec<wire::Line> =
                    serde_json::from_value(self.api(Method::GET, &path, None)?)
                        .map_err(|e| e.to_string())?;
                Ok(lines
                    .iter()
                    .map(|l| {
                        if l.stream == "err" {
                            format!("! {}", l.text)
                        } else {
                            l.text.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "exec" => {
                let command = args.get("command").cloned().ok_or("`command` is needed")?;
                let timeout = args["timeout"].as_str().unwrap_or("60s").to_string();
                let req = json!({"command": command, "timeout": timeout, "cwd": args.get("cwd")});
                let started = self.api(Method::POST, "/v1/procs", Some(req))?;
                let id = started["id"].as_str().unwrap_or_default().to_string();
                let p: wire::Proc = serde_json::from_value(self.api(
                    Method::GET,
                    &format!(
                        "/v1/procs/{}/wait?timeout={}",
                        encode(&id),
                        encode(&timeout)
                    ),
                    None,
                )?)
                .map_err(|e| e.to_string())?;
                let end = match (p.exit_code, p.signal, p.timed_out) {
                    (_, _, true) => format!("timed out after {timeout}"),
                    (Some(c), _, _) => format!("exit code {c}"),
                    (_, Some(s), _) => format!("signal {s}"),
                    _ => p.state.clone(),
                };
                let mut text = p.output.head.clone();
                if p.output.omitted_bytes > 0 {
                    text.push_str(&format!(
                        "\n[… {} bytes left out …]\n",
                        p.output.omitted_bytes
                    ));
                }
                text.push_str(&p.output.tail);
                let text = format!("{text}\n[{end}]");
                if p.exit_code == Some(0) {
                    Ok(text)
                } else {
                    Err(text)
                }
            }
            "list_instances" => self.api(Method::GET, "/v1/instances", None).map(pretty),
            "create_instance" => {
                let template = text("template")?;
                let mut req = json!({"template": template});
                if let Some(p) = args.get("params") {
                    req["params"] = p.clone();
                }
                if let Some(g) = args.get("git") {
                    req["git"] = g.clone();
                }
                self.api(Method::POST, "/v1/instances", Some(req))
                    .map(pretty)
            }
            "delete_instance" => {
                let name = text("name")?;
                let v = self.api(
                    Method::DELETE,
                    &format!("/v1/instances/{}", encode(&name)),
                    None,
                )?;
                Ok(v["message"].as_str().unwrap_or_default().to_string())
            }
            other => Err(format!("no tool `{other}`")),
        }
    }
}

/// The tools, with JSON Schemas of their arguments.
fn tools() -> Value {
    let name = json!({"type": "string", "description": "the unit's name (see list_units)"});
    let wait =
        json!({"type": "boolean", "description": "answer once it is up (or down); default true"});
    let act = |verb: &str, what: &str| {
        json!({
            "name": verb,
            "description": what,
            "inputSchema": {"type": "object", "properties": {"name": name, "wait": wait}, "required": ["name"]}
        })
    };
    json!([
        {"name": "list_units", "description": "Every unit (service, task, target, instance) with its kind, state and PID.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "unit_status", "description": "One unit in full: state, health, ports, restarts, why it waits or failed.",
         "inputSchema": {"type": "object", "properties": {"name": name}, "required": ["name"]}},
        act("start", "Start a unit (and what it depends on)."),
        act("stop", "Stop a unit; it stays stopped until started."),
        act("restart", "Stop and start a unit at once."),
        {"name": "logs", "description": "The last lines of a unit's log (stderr lines start with `! `).",
         "inputSchema": {"type": "object", "properties": {
             "name": name,
             "tail": {"type": "integer", "description": "how many lines (default 100, at most 5000)"},
             "grep": {"type": "string", "description": "only lines matching this regular expression"}},
           "required": ["name"]}},
        {"name": "exec", "description": "Run a command in the project (as an ad-hoc process of corral) and return its output and how it ended.",
         "inputSchema": {"type": "object", "properties": {
             "command": {"description": "a list of words, or a shell line (run with sh -c)",
                         "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
             "cwd": {"type": "string", "description": "directory, relative to the project"},
             "timeout": {"type": "string", "description": "e.g. 30s, 5m (default 60s)"}},
           "required": ["command"]}},
        {"name": "list_instances", "description": "Instances of templates: name, template, state, port, setup progress.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "create_instance", "description": "Make an instance of a template (its own port and workspace); it starts once ready.",
         "inputSchema": {"type": "object", "properties": {
             "template": {"type": "string"},
             "params": {"type": "object", "additionalProperties": {"type": "string"}},
             "git": {"type": "string", "description": "a repository to clone into the workspace"}},
           "required": ["template"]}},
        {"name": "delete_instance", "description": "Stop an instance and delete it with its workspace and logs.",
         "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
    ])
}
