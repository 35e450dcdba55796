//! Environment files (`.env`) and `${VAR}` expansion.

use std::collections::BTreeMap;

/// Expand `${NAME}` (and `$NAME`, `${NAME:-default}`, `${NAME-default}`) from `vars`; `$$` is
/// a literal `$`. An unknown name expands
/// to the empty string, as in a shell. Returns an error for an unterminated `${`.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err("`${` without a closing `}` (write `$$` for a literal `$`)".into());
            };
            let inner = &r[..end];
            // `${NAME:-default}`: the default when NAME is unset or empty; `${NAME-default}`:
            // only when unset (as in a shell).
            let (name, default) = match inner.find('-') {
                Some(i) if inner[..i].ends_with(':') => {
                    (&inner[..i - 1], Some((&inner[i + 1..], true)))
                }
                Some(i) => (&inner[..i], Some((&inner[i + 1..], false))),
                None => (inner, None),
            };
            if !is_name(name) {
                return Err(
                    "a `${...}` does not hold a variable name (write `$$` for a literal `$`)"
                        .into(),
                );
            }
            match (vars.get(name), default) {
                (Some(v), Some((d, true))) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(v),
                (None, Some((d, _))) => out.push_str(d),
                (None, None) => {}
            }
            rest = &r[end + 1..];
        } else {
            let len = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(c == '_' || c.is_ascii_alphanumeric()) || (i == 0 && c.is_ascii_digit())
                })
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(vars.get(&rest[..len]).map_or("", String::as_str));
                rest = &rest[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// One `KEY=value` line of a `.env` file, with the 1-based line number for errors.
pub struct EnvLine {
    pub line: usize,
    pub key: String,
    pub value: String,
    /// Single-quoted: taken literally, not expanded.
    pub literal: bool,
}

/// Where a `.env` file is wrong: 1-based line and column, and what is wrong — never the text
/// of the line (an `env_file` pointed at the wrong file must not print its secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotenvError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parse a `.env` file: `KEY=value`, optional `export `, `#` comments, values optionally in
/// single quotes (taken literally) or double quotes (with `\n`, `\"`, `\\` escapes); a quoted
/// value may span lines. Values are returned unexpanded.
///
/// Hand-written rather than `dotenvy`: corral expands `${VAR}` against its own layered
/// environment (inherited < `.env` < `env_file` < `env`), and its errors need a line and column
/// without echoing the line; `dotenvy` expands against the process environment and puts the
/// offending line in its error.
pub fn parse_dotenv(text: &str) -> Result<Vec<EnvLine>, DotenvError> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let raw = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
        i += 1;
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (line, skipped) = match line.strip_prefix("export ") {
            Some(rest) => (
                rest.trim_start(),
                indent + (line.len() - rest.trim_start().len()),
            ),
            None => (line, indent),
        };
        let err = |column: usize, message: &str| DotenvError {
            line: line_no,
            column: column + 1,
            message: message.to_string(),
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(skipped, "expected `KEY=value` (this line has no `=`)"));
        };
        let key = key.trim();
        if !is_name(key) {
            return Err(err(
                skipped,
                "the name before `=` is not a variable name (letters, digits and `_`, not starting with a digit)",
            ));
        }
        let value_col = skipped + line.find('=').unwrap_or(0) + 1;
        let value = value.trim_start();
        let value_col = value_col + (line[line.find('=').unwrap_or(0) + 1..].len() - value.len());
        let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"');
        let (value, literal) = match quote {
            Some(q) => {
                // The value runs to the matching quote, on this line or a later one.
                let mut body = String::new();
                let mut rest = &value[1..];
                let end_line;
                loop {
                    match closing(rest, q) {
                        Some(end) => {
                            body.push_str(&rest[..end]);
                            let after = rest[end + 1..].trim_start();
                            if !after.is_empty() && !after.starts_with('#') {
                                return Err(err(
                                    value_col,
                                    "unexpected text after the closing quote",
                                ));
                            }
                            end_line = true;
                            break;
                        }
                        None if i < lines.len() => {
                            body.push_str(rest);
                            body.push('\n');
                            rest = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
                            i += 1;
                        }
                        None => {
                            end_line = false;
                            break;
                        }
                    }
                }
                if !end_line {
                    return Err(err(value_col, &format!("unterminated `{q}`")));
                }
                if q == '"' {
                    (unescape(&body), false)
                } else {
                    (body, true)
                }
            }
            // An unquoted value ends at ` #`.
            None => (
                value
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim_end()
                    .to_string(),
                false,
            ),
        };
        out.push(EnvLine {
            line: line_no,
            key: key.to_string(),
            value,
            literal,
        });
    }
    Ok(out)
}

/// The index of the quote `q` that closes a value in `s` (a `\"` does not close a `"`).
fn closing(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("HOME", "/home/u"), ("N", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("${HOME}/x", &vars()).unwrap(), "/home/u/x");
        assert_eq!(expand("$N-$N", &vars()).unwrap(), "3-3");
        assert_eq!(expand("cost $$5", &vars()).unwrap(), "cost $5");
        assert_eq!(expand("${NOPE}.", &vars()).unwrap(), ".");
        assert_eq!(expand("${NOPE:-8080}", &vars()).unwrap(), "8080");
        assert_eq!(expand("${N:-8080}", &vars()).unwrap(), "3");
        assert_eq!(expand("${NOPE-x}", &vars()).unwrap(), "x");
        assert_eq!(expand("a $ b", &vars()).unwrap(), "a $ b");
        assert!(expand("${HOME", &vars()).is_err());
    }

    #[test]
    fn dotenv() {
        let text = "# c\nexport A=1\nB = 'x $y'\nC=\"a\\nb\"\nD=v # comment\n";
        let lines = parse_dotenv(text).unwrap();
        let kv: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(kv, [("A", "1"), ("B", "x $y"), ("C", "a\nb"), ("D", "v")]);
        let e = parse_dotenv("A=1\n  nonsense\n").err().unwrap();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(
            !e.message.contains("nonsense"),
            "never the line's text: {e:?}"
        );
    }

    #[test]
    fn quoted_values_may_span_lines() {
        let text =
            "KEY=\"-----BEGIN-----\nabc\n-----END-----\"\nNEXT='a\nb' # c\nQ=\"say \\\"hi\\\"\"\n";
        let lines = parse_dotenv(text).unwrap();
        assert_eq!(lines[0].value, "-----BEGIN-----\nabc\n-----END-----");
        assert_eq!(
            (lines[1].key.as_str(), lines[1].value.as_str()),
            ("NEXT", "a\nb")
        );
        assert_eq!(lines[1].line, 4);
        assert_eq!(lines[2].value, "say \"hi\"");
        let e = parse_dotenv("A=1\nB=\"open\nno end\n").err().unwrap();
        assert_eq!((e.line, e.column), (2, 3));
        assert_eq!(e.message, "unterminated `\"`");
    }
}
