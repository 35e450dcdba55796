//! A document ([`Node`] tree in corral.toml's shape) written out as corral.toml text: what
//! `corral import` produces from a process-compose file or a Procfile. Top-level values first,
//! then one `[section.NAME]` table per unit, each key on its own line with inline values.

use crate::node::{Node, Value};

/// `doc` as TOML, after `header` (each line becomes a `# ` comment).
pub fn toml(doc: &Node, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    let Value::Table(top) = &doc.value else {
        return out;
    };
    let sections = ["services", "tasks", "targets", "templates"];
    let mut wrote_plain = false;
    for (k, v) in top {
        if !sections.contains(&k.name.as_str()) {
            if !wrote_plain && !header.is_empty() {
                out.push('\n');
            }
            wrote_plain = true;
            out.push_str(&format!("{} = {}\n", key(&k.name), inline(v)));
        }
    }
    for (k, v) in top {
        if !sections.contains(&k.name.as_str()) {
            continue;
        }
        let Value::Table(units) = &v.value else {
            continue;
        };
        for (name, body) in units {
            out.push_str(&format!("\n[{}.{}]\n", k.name, key(&name.name)));
            match &body.value {
                Value::Table(t) => {
                    for (bk, bv) in t {
                        out.push_str(&format!("{} = {}\n", key(&bk.name), inline(bv)));
                    }
                }
                _ => out.push_str(&format!("# (not a table: {})\n", inline(body))),
            }
        }
    }
    out
}

/// A key: bare when it can be, quoted otherwise.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        string(k)
    }
}

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn inline(n: &Node) -> String {
    match &n.value {
        Value::String(s) => string(s),
        Value::Integer(Some(i)) => i.to_string(),
        // Too large for corral anyway: written so that validation says so.
        Value::Integer(None) => "9223372036854775807".into(),
        Value::Float(f) if f.is_finite() => {
            let s = f.to_string();
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Value::Float(f) if f.is_nan() => "nan".into(),
        Value::Float(f) => {
            if *f > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Datetime(d) => d.clone(),
        // TOML has no null: an empty string says "nothing" where a string is expected.
        Value::Null => "\"\"".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Table(t) => {
            if t.is_empty() {
                return "{}".into();
            }
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{} = {}", key(&k.name), inline(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let text = "env = { A = \"x \\\"q\\\" \\\\ \\n\" }\n\n[services.\"web.1\"]\ncommand = [\"bash\", \"-c\", \"echo $$HOME\"]\nrestart = { mode = \"always\", max_restarts = 3, jitter = 0.0 }\n";
        let doc = crate::read::toml(text).unwrap();
        let written = toml(&doc, &["a header".into()]);
        assert!(written.starts_with("# a header\n"), "{written}");
        let again = crate::read::toml(&written).unwrap();
        assert_eq!(
            crate::node::Node::to_json(&again),
            crate::node::Node::to_json(&doc),
            "{written}"
        );
    }
}
