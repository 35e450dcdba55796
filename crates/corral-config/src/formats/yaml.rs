//! YAML text into [`Node`]s, every value with its span, so an error in a process-compose file
//! names its line and column like one in corral.toml.
//!
//! Plain scalars are typed by YAML 1.2's core schema (null, booleans, integers, floats);
//! quoted and block scalars are strings. Anchors and aliases are followed, and the merge key
//! (`<<: *defaults`) is applied: keys written in the mapping win over merged ones.

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diag::Diagnostic;
use crate::node::{Key, Node, Span, Table, Value};

/// Parse `text` (its first document) into a node tree; an empty document is an empty table.
pub fn read(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let offsets = ByteOffsets::new(text);
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => events.push((
                event,
                offsets.of(span.start.index())..offsets.of(span.end.index()),
            )),
            Err(e) => {
                let at = offsets.of(e.marker().index());
                return Err(vec![Diagnostic::new(
                    Span::File(at..at + 1),
                    format!("YAML: {}", e.info()),
                )]);
            }
        }
    }
    let mut b = Builder {
        events: events.into_iter().peekable(),
        anchors: Vec::new(),
        diags: Vec::new(),
    };
    let doc = b.document();
    if !b.diags.is_empty() {
        return Err(b.diags);
    }
    Ok(doc.unwrap_or(Node {
        value: Value::Table(Vec::new()),
        span: Span::TOP,
    }))
}

/// The parser counts characters; spans are byte offsets.
struct ByteOffsets(Option<Vec<usize>>);

impl ByteOffsets {
    fn new(text: &str) -> ByteOffsets {
        if text.is_ascii() {
            return ByteOffsets(None);
        }
        let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        v.push(text.len());
        ByteOffsets(Some(v))
    }

    fn of(&self, chars: usize) -> usize {
        match &self.0 {
            None => chars,
            Some(v) => v
                .get(chars)
                .copied()
                .unwrap_or_else(|| *v.last().unwrap_or(&0)),
        }
    }
}

type Spanned<'a> = (Event<'a>, std::ops::Range<usize>);

struct Builder<'a, I: Iterator<Item = Spanned<'a>>> {
    events: std::iter::Peekable<I>,
    /// Anchored nodes by anchor id (ids start at 1).
    anchors: Vec<(usize, Node)>,
    diags: Vec<Diagnostic>,
}

impl<'a, I: Iterator<Item = Spanned<'a>>> Builder<'a, I> {
    fn document(&mut self) -> Option<Node> {
        loop {
            match self.events.peek() {
                None => return None,
                Some((Event::StreamStart | Event::DocumentStart(_), _)) => {
                    self.events.next();
                }
                Some((Event::StreamEnd | Event::DocumentEnd, _)) => return None,
                Some(_) => return self.node(),
            }
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
    }

    fn node(&mut self) -> Option<Node> {
        let (event, span) = self.events.next()?;
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = if style == ScalarStyle::Plain && tag.is_none() {
                    plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                let node = Node {
                    value,
                    span: Span::File(span),
                };
                self.remember(anchor, &node);
                Some(node)
            }
            Event::Alias(id) => {
                let found = self.anchors.iter().rev().find(|(a, _)| *a == id);
                match found {
                    Some((_, n)) => Some(n.clone()),
                    None => {
                        self.diags.push(Diagnostic::new(
                            Span::File(span),
                            "YAML: an alias to an unknown anchor",
                        ));
                        None
                    }
                }
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let mut end = span.end;
                loop {
                    match self.events.peek() {
                        Some((Event::SequenceEnd, s)) => {
                            end = s.end;
                            self.events.next();
                            break;
                        }
                        None => break,
                        Some(_) => {
                            if let Some(n) = self.node() {
                                items.push(n);
                            }
                        }
                    }
                }
                let node = Node {
                    value: Value::Array(items),
                    span: Span::File(span.start..end.max(span.start)),
                };
                self.remember(anchor, &node);
                Some(node)
            }
            Event::MappingStart(anchor, _) => {
                let mut table: Table = Vec::new();
                let mut merged: Table = Vec::new();
                let mut end = span.end;
                loop {
                    match self.events.peek() {
                        Some((Event::MappingEnd, s)) => {
                            end = s.end;
                            self.events.next();
                            break;
                        }
                        None => break,
                        Some(_) => {
                            let Some(k) = self.node() else { continue };
                            let Some(v) = self.node() else { continue };
                            let name = match &k.value {
                                Value::String(s) => s.clone(),
                                Value::Integer(Some(i)) => i.to_string(),
                                Value::Bool(b) => b.to_string(),
                                Value::Float(f) => f.to_string(),
                                Value::Null => String::new(),
                                _ => {
                                    self.diags.push(Diagnostic::new(
                                        k.span.clone(),
                                        "YAML: a key must be a plain value, not a list or mapping",
                                    ));
                                    continue;
                                }
                            };
                            if name == "<<" {
                                // The merge key: one mapping, or a list of them.
                                let sources = match v.value {
                                    Value::Table(t) => vec![t],
                                    Value::Array(a) => a
                                        .into_iter()
                                        .filter_map(|n| match n.value {
                                            Value::Table(t) => Some(t),
                                            _ => None,
                                        })
                                        .collect(),
                                    _ => Vec::new(),
                                };
                                for t in sources {
                                    for (mk, mv) in t {
                                        if !merged.iter().any(|(x, _)| x.name == mk.name) {
                                            merged.push((mk, mv));
                                        }
                                    }
                                }
                                continue;
                            }
                            if let Some((prev, _)) = table.iter().find(|(x, _)| x.name == name) {
                                let _ = prev;
                                self.diags.push(Diagnostic::new(
                                    k.span.clone(),
                                    format!("YAML: the key `{name}` appears twice here"),
                                ));
                                continue;
                            }
                            table.push((Key { name, span: k.span }, v));
                        }
                    }
                }
                for (mk, mv) in merged {
                    if !table.iter().any(|(x, _)| x.name == mk.name) {
                        table.push((mk, mv));
                    }
                }
                let node = Node {
                    value: Value::Table(table),
                    span: Span::File(span.start..end.max(span.start)),
                };
                self.remember(anchor, &node);
                Some(node)
            }
            Event::SequenceEnd | Event::MappingEnd => None,
            _ => None,
        }
    }
}

/// A plain scalar typed by YAML 1.2's core schema.
fn plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = |d: &str, radix: u32| !d.is_empty() && i64::from_str_radix(d, radix).is_ok();
    if let Some(h) = s.strip_prefix("0x")
        && digits(h, 16)
    {
        return Value::Integer(i64::from_str_radix(h, 16).ok());
    }
    if let Some(o) = s.strip_prefix("0o")
        && digits(o, 8)
    {
        return Value::Integer(i64::from_str_radix(o, 8).ok());
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Value::Integer(s.parse().ok());
    }
    let float_like = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && unsigned.bytes().any(|b| b.is_ascii_digit());
    if float_like && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'n>(n: &'n Node, path: &[&str]) -> &'n Node {
        let mut cur = n;
        for p in path {
            let Value::Table(t) = &cur.value else {
                panic!("not a table at {p}")
            };
            cur = crate::node::get(t, p).unwrap_or_else(|| panic!("no {p}"));
        }
        cur
    }

    #[test]
    fn values_are_typed_and_spanned() {
        let text = "a:\n  n: 42\n  s: \"42\"\n  b: true\n  f: 1.5\n  z:\n  l: [x, 'y']\n  é: ü\n";
        let doc = read(text).unwrap();
        assert_eq!(get(&doc, &["a", "n"]).value, Value::Integer(Some(42)));
        assert_eq!(get(&doc, &["a", "s"]).value, Value::String("42".into()));
        assert_eq!(get(&doc, &["a", "b"]).value, Value::Bool(true));
        assert_eq!(get(&doc, &["a", "f"]).value, Value::Float(1.5));
        assert_eq!(get(&doc, &["a", "z"]).value, Value::Null);
        let Span::File(r) = &get(&doc, &["a", "s"]).span else {
            panic!()
        };
        assert_eq!(&text[r.clone()], "\"42\"");
        // Spans are bytes, past a multi-byte character too.
        let Span::File(r) = &get(&doc, &["a", "é"]).span else {
            panic!()
        };
        assert_eq!(&text[r.clone()], "ü");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = "base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\n";
        let doc = read(text).unwrap();
        assert_eq!(get(&doc, &["use", "x"]).value, Value::Integer(Some(1)));
        assert_eq!(get(&doc, &["use", "y"]).value, Value::Integer(Some(3)));
    }

    #[test]
    fn errors_have_their_line() {
        let text = "a: 1\nb: [1, 2\nc: 3\n";
        let e = read(text).unwrap_err();
        let Span::File(r) = &e[0].span else { panic!() };
        let (line, _) = crate::diag::line_col(text, r.start);
        assert!(line >= 2, "{e:?}");
        let dup = read("a: 1\na: 2\n").unwrap_err();
        assert!(dup[0].message.contains("twice"), "{dup:?}");
    }
}
