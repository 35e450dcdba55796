//! Environment files (`.env`) and `${VAR}` expansion.

use std::collections::BTreeMap;

/// Expand `${NAME}` (and `$NAME`) from `vars`; `$$` is a literal `$`. An unknown name expands
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
            let name = &r[..end];
            if !is_name(name) {
                return Err(format!("`${{{name}}}` is not a variable name"));
            }
            out.push_str(vars.get(name).map_or("", String::as_str));
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

/// Parse a `.env` file: `KEY=value`, optional `export `, `#` comments, values optionally in
/// single quotes (taken literally) or double quotes (with `\n`, `\"`, `\\` escapes).
/// Values are returned unexpanded.
pub fn parse_dotenv(text: &str) -> Result<Vec<EnvLine>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, format!("expected `KEY=value`, found `{line}`")));
        };
        let key = key.trim();
        if !is_name(key) {
            return Err((line_no, format!("`{key}` is not a variable name")));
        }
        let value = value.trim();
        let literal = value.starts_with('\'');
        let value = if let Some(v) = value.strip_prefix('\'') {
            v.strip_suffix('\'')
                .ok_or((line_no, "unterminated `'`".to_string()))?
                .to_string()
        } else if let Some(v) = value.strip_prefix('"') {
            let v = v
                .strip_suffix('"')
                .ok_or((line_no, "unterminated `\"`".to_string()))?;
            v.replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else {
            // An unquoted value ends at ` #`.
            value
                .split(" #")
                .next()
                .unwrap_or("")
                .trim_end()
                .to_string()
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
        assert_eq!(parse_dotenv("A=1\nnonsense\n").err().unwrap().0, 2);
    }
}
