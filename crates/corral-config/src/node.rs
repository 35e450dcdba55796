//! The format-neutral document every config source is read into: a tree of values, each with
//! where it came from ([`Span`]). corral.toml (TOML), definitions sent over the API or stored
//! by the daemon (JSON), and rendered templates all become [`Node`]s; one validator walks them
//! (`validate.rs`), so a key is spelled — and checked — in one place, and an error points at
//! the line and column of a file or at the field of a request.

use std::ops::Range;
use std::sync::Arc;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Span {
    /// A byte range of the config file.
    File(Range<usize>),
    /// A field of a definition that has no file: `owner` says whose (``service `x` (added at
    /// run time)``), `path` which field (`restart.max_restarts`; empty for the whole thing).
    Field { owner: Arc<str>, path: String },
}

impl Span {
    /// The start of the file, for what is about the file as a whole.
    pub const TOP: Span = Span::File(0..0);
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    /// `None`: a whole number too large for i64.
    Integer(Option<i64>),
    Float(f64),
    Bool(bool),
    /// A TOML date or time, as written (nothing in corral's schema takes one).
    Datetime(String),
    /// JSON's `null` (nothing in corral's schema takes one).
    Null,
    Array(Vec<Node>),
    Table(Table),
}

/// Keys in the order they were written.
pub type Table = Vec<(Key, Node)>;

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Value {
    /// The type's name, for "must be a string, found …".
    pub fn type_str(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Null => "null",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// The value of `key` in `table`.
pub fn get<'a>(table: &'a Table, key: &str) -> Option<&'a Node> {
    table.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
}

impl Node {
    /// Every string in the tree with `{key}` replaced by its value in `vars` (templates).
    pub fn fill(&self, vars: &[(String, String)]) -> Node {
        let value = match &self.value {
            Value::String(s) => Value::String(crate::fill(s, vars)),
            Value::Array(items) => Value::Array(items.iter().map(|n| n.fill(vars)).collect()),
            Value::Table(t) => {
                Value::Table(t.iter().map(|(k, v)| (k.clone(), v.fill(vars))).collect())
            }
            other => other.clone(),
        };
        Node {
            value,
            span: self.span.clone(),
        }
    }

    /// A string run by `sh -c` with its placeholders filled, every value quoted for the shell.
    pub fn fill_shell(&self, vars: &[(String, String)]) -> Node {
        match &self.value {
            Value::String(s) => Node {
                value: Value::String(crate::fill_shell(s, vars)),
                span: self.span.clone(),
            },
            _ => self.fill(vars),
        }
    }

    /// As JSON: the shape the API takes for a definition, and the daemon stores.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::String(s) | Value::Datetime(s) => J::String(s.clone()),
            Value::Integer(Some(i)) => J::from(*i),
            // Out of i64's range (no key takes one): refused again when read back.
            Value::Integer(None) | Value::Null => J::Null,
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Bool(b) => J::Bool(*b),
            Value::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Table(t) => J::Object(
                t.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// From JSON, each value's span naming its field (`restart.max_restarts`, `command[1]`).
    pub fn from_json(v: &serde_json::Value, owner: &Arc<str>) -> Node {
        from_json_at(v, owner, String::new())
    }
}

fn from_json_at(v: &serde_json::Value, owner: &Arc<str>, path: String) -> Node {
    use serde_json::Value as J;
    let span = |path: &str| Span::Field {
        owner: owner.clone(),
        path: path.to_string(),
    };
    let value = match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(Some(i)),
            None if n.is_u64() => Value::Integer(None),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| from_json_at(item, owner, format!("{path}[{i}]")))
                .collect(),
        ),
        J::Object(map) => Value::Table(
            map.iter()
                .map(|(k, item)| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    (
                        Key {
                            name: k.clone(),
                            span: span(&p),
                        },
                        from_json_at(item, owner, p),
                    )
                })
                .collect(),
        ),
    };
    Node {
        value,
        span: span(&path),
    }
}
