//! Stage 1, read: a source's text into [`Node`]s, and the top level of a project into its
//! parts — project-wide settings, units, templates — with every name checked. What a unit's
//! keys mean is the validator's business (`validate.rs`); here only the shape of the document.

use corral_engine::Kind;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, did_you_mean};
use crate::node::{Key, Node, Span, Table, Value, get};

/// The top-level keys of corral.toml.
pub(crate) const TOP_KEYS: &[&str] = &[
    "services",
    "tasks",
    "targets",
    "templates",
    "env",
    "env_file",
    "log",
    "shell",
];

/// One unit (or template) as read: its name and the table of its keys.
#[derive(Clone, Debug)]
pub struct RawUnit {
    pub kind: Kind,
    pub name: String,
    pub name_span: Span,
    pub body: Table,
    /// Where the whole body is, for what it lacks.
    pub span: Span,
}

/// A project as read, before validation: what every source format lowers into.
#[derive(Clone, Debug, Default)]
pub struct RawProject {
    pub env_file: Option<Node>,
    pub env: Option<Node>,
    pub log: Option<Node>,
    pub shell: Option<Node>,
    /// Services, tasks and targets in the order written.
    pub units: Vec<RawUnit>,
    pub templates: Vec<RawUnit>,
}

/// TOML text into a node tree. Syntax errors come back all at once, with their spans.
pub fn toml(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| Diagnostic::new(Span::File(e.span().unwrap_or(0..0)), e.message().trim()))
            .collect());
    }
    Ok(Node {
        span: Span::File(0..text.len()),
        value: Value::Table(table(doc.into_inner())),
    })
}

fn table(t: DeTable<'_>) -> Table {
    t.into_iter()
        .map(|(k, v)| {
            let key = Key {
                name: k.get_ref().to_string(),
                span: Span::File(k.span()),
            };
            (key, node(v))
        })
        .collect()
}

fn node(v: Spanned<DeValue<'_>>) -> Node {
    let span = Span::File(v.span());
    let value = match v.into_inner() {
        DeValue::String(s) => Value::String(s.into_owned()),
        DeValue::Integer(i) => Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).ok()),
        DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(a.into_iter().map(node).collect()),
        DeValue::Table(t) => Value::Table(table(t)),
    };
    Node { value, span }
}

/// Endings a name may not have: a unit's name becomes a file name in `.corral/`
/// (`logs/NAME.log`), and must not look like the files corral keeps there.
const RESERVED_ENDINGS: &[&str] = &[".sock", ".log", ".pid", ".db", ".lock", ".err", ".read"];

/// Whether `name` may name a unit: letters, digits, `-`, `_`, `.`; at most 64; starting with a
/// letter or digit (a leading `-` reads as an option on a command line); not ending like one of
/// corral's own files.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !RESERVED_ENDINGS.iter().any(|e| name.ends_with(e))
}

pub const NAME_HELP: &str = "use letters, digits, `-`, `_` and `.` (at most 64, starting with a letter or digit, not ending in `.sock`, `.log`, `.pid`, `.db`, `.lock`, `.err` or `.read`)";

/// Report keys of `table` that are not in `allowed`, with a suggestion.
pub fn check_keys(diags: &mut Vec<Diagnostic>, table: &Table, allowed: &[&str], context: &str) {
    for (key, _) in table {
        if !allowed.contains(&key.name.as_str()) {
            let msg = format!("unknown key `{}` in {context}", key.name);
            let help = match did_you_mean(&key.name, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            diags.push(Diagnostic::new(key.span.clone(), msg).with_help(help));
        }
    }
}

/// The table inside `v`, or an error naming `what`.
pub fn as_table<'a>(diags: &mut Vec<Diagnostic>, v: &'a Node, what: &str) -> Option<&'a Table> {
    match &v.value {
        Value::Table(t) => Some(t),
        other => {
            diags.push(Diagnostic::new(
                v.span.clone(),
                format!("{what} must be a table, found {}", other.type_str()),
            ));
            None
        }
    }
}

/// Split a corral.toml document into its parts. Units with a bad name, a body that is not a
/// table, or a name used before are reported and left out.
pub fn project(doc: &Node, diags: &mut Vec<Diagnostic>) -> RawProject {
    let mut raw = RawProject::default();
    let Some(top) = as_table(diags, doc, "the file") else {
        return raw;
    };
    check_keys(diags, top, TOP_KEYS, "the top level");
    raw.env_file = get(top, "env_file").cloned();
    raw.env = get(top, "env").cloned();
    raw.log = get(top, "log").cloned();
    raw.shell = get(top, "shell").cloned();
    for (section, kind) in [
        ("services", Kind::Service),
        ("tasks", Kind::Task),
        ("targets", Kind::Target),
    ] {
        let Some(v) = get(top, section) else {
            continue;
        };
        let Some(t) = as_table(diags, v, &format!("`{section}`")) else {
            continue;
        };
        for (name, body) in t {
            if !valid_name(&name.name) {
                diags.push(
                    Diagnostic::new(
                        name.span.clone(),
                        format!("`{}` is not a valid name", name.name),
                    )
                    .with_help(NAME_HELP),
                );
                continue;
            }
            if let Some(other) = raw.units.iter().find(|u| u.name == name.name) {
                diags.push(Diagnostic::new(
                    name.span.clone(),
                    format!(
                        "`{}` is defined twice (already a {})",
                        name.name,
                        other.kind.as_str()
                    ),
                ));
                continue;
            }
            let what = format!("{} `{}`", kind.as_str(), name.name);
            let Some(body_t) = as_table(diags, body, &what) else {
                continue;
            };
            raw.units.push(RawUnit {
                kind,
                name: name.name.clone(),
                name_span: name.span.clone(),
                body: body_t.clone(),
                span: body.span.clone(),
            });
        }
    }
    if let Some(v) = get(top, "templates")
        && let Some(t) = as_table(diags, v, "`templates`")
    {
        for (name, body) in t {
            if !valid_name(&name.name) {
                diags.push(Diagnostic::new(
                    name.span.clone(),
                    format!("`{}` is not a valid name", name.name),
                ));
                continue;
            }
            let what = format!("template `{}`", name.name);
            let Some(body_t) = as_table(diags, body, &what) else {
                continue;
            };
            raw.templates.push(RawUnit {
                kind: Kind::Service,
                name: name.name.clone(),
                name_span: name.span.clone(),
                body: body_t.clone(),
                span: body.span.clone(),
            });
        }
    }
    raw
}
