//! Output made stable for snapshots: what changes from run to run — times, durations, PIDs,
//! ports, CPU and memory, the temp dir — replaced by a name in brackets. Tables are compared
//! by their cells, not their padding (a PID's width moves every column after it).

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

static TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").unwrap());
static DURATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d+(\.\d+)?(ms|s)\b|\b\d+m \d+s\b").unwrap());
static PID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bpid \d+\b").unwrap());
static PADDING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r" {2,}").unwrap());

/// Columns of `corral ps` whose values change from run to run.
const VOLATILE: &[&str] = &["PID", "CPU", "MEM", "UPTIME", "PORTS"];

pub fn redact(text: &str, root: &Path) -> String {
    let mut out = text.to_string();
    for dir in [
        std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        root.to_path_buf(),
    ] {
        out = out.replace(&dir.display().to_string(), "[DIR]");
    }
    out = TIME.replace_all(&out, "[TIME]").into_owned();
    out = PID.replace_all(&out, "pid [PID]").into_owned();
    out = DURATION.replace_all(&out, "[DUR]").into_owned();
    // Padding between cells goes; indentation (a tree's depth) stays.
    out.lines()
        .map(|l| {
            let body = l.trim_start();
            let indent = &l[..l.len() - body.len()];
            format!("{indent}{}", PADDING.replace_all(body.trim_end(), "  "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table (header line, then rows; cells apart by two spaces or more) with its volatile
/// columns' values redacted (`-` stays: "none" is stable).
pub fn redact_table(text: &str, root: &Path) -> String {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return String::new();
    };
    let cols: Vec<&str> = PADDING.split(header.trim_end()).collect();
    let mut out = vec![cols.join("  ")];
    for line in lines {
        let cells: Vec<String> = PADDING
            .split(line.trim_end())
            .enumerate()
            .map(|(i, c)| match cols.get(i) {
                Some(col) if VOLATILE.contains(col) && c != "-" => format!("[{col}]"),
                _ => c.to_string(),
            })
            .collect();
        out.push(cells.join("  "));
    }
    redact(&out.join("\n"), root)
}
