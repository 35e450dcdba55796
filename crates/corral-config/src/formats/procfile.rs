//! A Procfile, read with foreman's conventions, as a corral.toml document ([`Node`]s with the
//! Procfile's spans): `name: command` lines (blank lines and `#` comments skipped), each a
//! service whose command runs with `sh -c`; each gets `PORT` = base + 100 × its index in the
//! file (base 5000, or `PORT` from the environment) and `PS=name.1`. A formation
//! (`web=2,worker=1`) runs that many of each: replica n (from 1) is `name.n` with `PORT` + n − 1
//! and `PS=name.n`; a count of 0 leaves the type out.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::node::{Key, Node, Span, Table, Value};

/// Parse `text`. `base_port` is foreman's base (5000 unless `PORT` is set); `formation` maps a
/// process type to how many to run (the rest run one).
pub fn rewrite(
    text: &str,
    base_port: u16,
    formation: &BTreeMap<String, usize>,
) -> Result<Node, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut services: Table = Vec::new();
    let mut offset = 0;
    let mut index = 0usize;
    let mut seen: Vec<String> = Vec::new();
    for raw_line in text.split_inclusive('\n') {
        let start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = line.len() - trimmed.len();
        let Some((name, command)) = trimmed.split_once(':') else {
            diags.push(
                Diagnostic::new(
                    Span::File(start..start + line.len()),
                    "a Procfile line must be `name: command`",
                )
                .with_help("e.g. `web: bundle exec rails server -p $PORT`"),
            );
            continue;
        };
        let name_span = Span::File(start + lead..start + lead + name.len());
        let name = name.trim();
        let cmd_start = start + lead + name.len() + 1;
        let command = command.trim();
        let cmd_span = Span::File(cmd_start..start + line.len());
        if command.is_empty() {
            diags.push(Diagnostic::new(
                cmd_span,
                format!("process type `{name}` has no command"),
            ));
            continue;
        }
        if seen.iter().any(|s| s == name) {
            diags.push(Diagnostic::new(
                name_span,
                format!("process type `{name}` is defined twice"),
            ));
            continue;
        }
        seen.push(name.to_string());
        let count = formation.get(name).copied().unwrap_or(1);
        let port = u32::from(base_port) + 100 * index as u32;
        index += 1;
        for n in 1..=count {
            // One of a type keeps the type's name; several are `name.1`, `name.2`, ….
            let unit = if count == 1 {
                name.to_string()
            } else {
                format!("{name}.{n}")
            };
            let port = port + n as u32 - 1;
            let s = |v: String| Node {
                value: Value::String(v),
                span: cmd_span.clone(),
            };
            let k = |n: &str| Key {
                name: n.into(),
                span: name_span.clone(),
            };
            let env: Table = vec![
                (k("PORT"), s(port.to_string())),
                (k("PS"), s(format!("{name}.{n}"))),
            ];
            let body: Table = vec![
                // foreman runs each line with `sh -c`, as corral runs a string command.
                (k("command"), s(command.to_string())),
                (
                    k("env"),
                    Node {
                        value: Value::Table(env),
                        span: cmd_span.clone(),
                    },
                ),
            ];
            services.push((
                Key {
                    name: unit,
                    span: name_span.clone(),
                },
                Node {
                    value: Value::Table(body),
                    span: Span::File(start..start + line.len()),
                },
            ));
        }
    }
    for name in formation.keys() {
        if !seen.contains(name) {
            diags.push(Diagnostic::new(
                Span::TOP,
                format!("the formation names `{name}`, which the Procfile does not define"),
            ));
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if services.is_empty() {
        return Err(vec![Diagnostic::new(
            Span::TOP,
            "the Procfile defines no process types",
        )]);
    }
    Ok(Node {
        value: Value::Table(vec![(
            Key {
                name: "services".into(),
                span: Span::TOP,
            },
            Node {
                value: Value::Table(services),
                span: Span::File(0..text.len()),
            },
        )]),
        span: Span::File(0..text.len()),
    })
}

/// A formation, `web=2,worker=1`, into counts.
pub fn formation(spec: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not `name=count` (e.g. web=2,worker=1)"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` in `{part}` is not a count"))?;
        if n > 100 {
            return Err(format!("`{part}`: at most 100 of one type"));
        }
        out.insert(name.trim().to_string(), n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(doc: &Node) -> Vec<String> {
        let Value::Table(t) = &doc.value else {
            panic!()
        };
        let Value::Table(s) = &crate::node::get(t, "services").unwrap().value else {
            panic!()
        };
        s.iter().map(|(k, _)| k.name.clone()).collect()
    }

    #[test]
    fn lines_comments_and_formation() {
        let text = "# the app\nweb: ruby app.rb -p $PORT\n\nworker:  sidekiq\n";
        let doc = rewrite(text, 5000, &BTreeMap::new()).unwrap();
        assert_eq!(names(&doc), ["web", "worker"]);
        let f = formation("web=2, worker=0").unwrap();
        let doc = rewrite(text, 5000, &f).unwrap();
        assert_eq!(names(&doc), ["web.1", "web.2"]);
        assert!(formation("web").is_err());
        assert!(rewrite(text, 5000, &formation("nope=1").unwrap()).is_err());
    }

    #[test]
    fn a_bad_line_has_its_place() {
        let text = "web: a\nthis is not a process\n";
        let e = rewrite(text, 5000, &BTreeMap::new()).unwrap_err();
        let Span::File(r) = &e[0].span else { panic!() };
        assert_eq!(crate::diag::line_col(text, r.start), (2, 1));
    }
}
