//! `corral mcp`: a minimal MCP client of our own drives it over stdio (JSON-RPC, a message a
//! line): initialize, list the tools, call them against a running corral.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

struct Mcp {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next: u64,
}

impl Mcp {
    fn start(p: &Project) -> Mcp {
        let mut child = Command::new(BIN)
            .arg("mcp")
            .current_dir(p.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Mcp {
            child,
            stdin,
            lines,
            next: 1,
        }
    }

    fn send(&mut self, msg: &str) {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// A request; its response (one JSON line, within the deadline).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        let line = self.lines.recv_timeout(T).expect("an answer in time");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], id, "{v}");
        v
    }

    fn tool(&mut self, name: &str, args: Value) -> (bool, String) {
        let v = self.request("tools/call", json!({"name": name, "arguments": args}));
        let r = &v["result"];
        (
            r["isError"].as_bool().unwrap(),
            r["content"][0]["text"].as_str().unwrap().to_string(),
        )
    }
}

#[test]
fn an_mcp_client_drives_corral_over_stdio() {
    let p = Project::new(
        r#"
[services.api]
command = "echo api says hello; exec sleep 30"

[templates.box]
command = ["sleep", "30"]
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let mut m = Mcp::start(&p);

    let init = m.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "corral");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    m.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let tools = m.request("tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for want in [
        "list_units",
        "start",
        "stop",
        "restart",
        "logs",
        "exec",
        "create_instance",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    let (bad, text) = m.tool("list_units", json!({}));
    assert!(!bad && text.contains("api (service): running"), "{text}");
    eventually(T, "api's line in its log", || {
        let (_, text) = m.tool("logs", json!({"name": "api"}));
        text.contains("api says hello")
    });
    let (bad, text) = m.tool("restart", json!({"name": "api"}));
    assert!(!bad, "{text}");
    let (bad, text) = m.tool("exec", json!({"command": "echo from exec; exit 3"}));
    assert!(
        bad && text.contains("from exec") && text.contains("[exit code 3]"),
        "{text}"
    );
    let (bad, text) = m.tool("exec", json!({"command": ["echo", "fine"]}));
    assert!(!bad && text.contains("fine"), "{text}");
    let (bad, text) = m.tool("create_instance", json!({"template": "box"}));
    assert!(!bad, "{text}");
    let made: Value = serde_json::from_str(&text).unwrap();
    let name = made["name"].as_str().unwrap().to_string();
    let (bad, text) = m.tool("delete_instance", json!({"name": name}));
    assert!(!bad, "{text}");

    // Mistakes come back as errors the assistant can read, not as a dead server.
    let (bad, text) = m.tool("stop", json!({"name": "nope"}));
    assert!(bad && text.contains("nope"), "{text}");
    let (bad, text) = m.tool("fly", json!({}));
    assert!(bad && text.contains("no tool `fly`"), "{text}");
    let v = m.request("resources/list", json!({}));
    assert_eq!(v["error"]["code"], -32601, "{v}");
    m.send("{ not json");
    let v: Value = serde_json::from_str(&m.lines.recv_timeout(T).unwrap()).unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    assert_eq!(m.request("ping", json!({}))["result"], json!({}));

    // Its input closed, it ends.
    drop(m.stdin);
    let status = m.child.wait().unwrap();
    assert!(status.success());
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}
