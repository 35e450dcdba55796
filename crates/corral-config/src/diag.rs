//! Config errors a person can act on: every error at once, each with file, line, column, the
//! offending line with a caret under it, and a hint where we have one. An error in a definition
//! that has no file (sent over the API, made from a template) names its field instead.
//!
//! We render these ourselves rather than through miette: the format is a dozen lines, and
//! miette's fancy renderer costs more build time than the whole config crate on 2 cores.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::node::Span;

/// One problem in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What the message is about: a byte range of the file, or a field of a definition.
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub source_text: String,
    pub diagnostics: Vec<Diagnostic>,
    /// Files read over `file` (`-f a -f b`): each with where its text starts in
    /// `source_text`, which holds them all one after another.
    pub parts: Vec<(PathBuf, usize)>,
}

/// Why a config could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "no `corral.toml`, `process-compose.yaml` or `Procfile` in `{}` or any parent directory\n  help: create a corral.toml, or pass a file with `-f FILE`",
        .0.display()
    )]
    NotFound(PathBuf),
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The text diagnostics point into: one file, or several read one over another (`parts`: each
/// later file and where its text starts in `text`).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub parts: &'a [(PathBuf, usize)],
}

impl<'a> Sources<'a> {
    /// The file a byte offset is in, its text, and the offset within it.
    fn locate(&self, offset: usize) -> (&'a Path, &'a str, usize) {
        let mut file = self.file;
        let mut start = 0;
        let mut end = self
            .parts
            .first()
            .map_or(self.text.len(), |(_, s)| s.saturating_sub(1));
        for (i, (p, s)) in self.parts.iter().enumerate() {
            if offset >= *s {
                file = p;
                start = *s;
                end = self
                    .parts
                    .get(i + 1)
                    .map_or(self.text.len(), |(_, n)| n.saturating_sub(1));
            }
        }
        let end = end.clamp(start, self.text.len());
        (file, &self.text[start..end], offset - start)
    }
}

/// Diagnostics as `level` (`error`, `warning`), one after another.
pub fn render(sources: Sources<'_>, diags: &[Diagnostic], level: &str) -> String {
    struct Shown<'a>(Sources<'a>, &'a [Diagnostic], &'a str);
    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for d in self.1 {
                render_one(f, self.0, d, self.2)?;
                writeln!(f)?;
            }
            Ok(())
        }
    }
    Shown(sources, diags, level).to_string()
}

fn render_one(
    f: &mut fmt::Formatter<'_>,
    sources: Sources<'_>,
    d: &Diagnostic,
    level: &str,
) -> fmt::Result {
    let span = match &d.span {
        Span::File(range) => range.clone(),
        Span::Field { owner, path } => {
            writeln!(f, "{level}: {}", d.message)?;
            if path.is_empty() {
                writeln!(f, "  --> {owner}")?;
            } else {
                writeln!(f, "  --> {owner}, field `{path}`")?;
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
            return Ok(());
        }
    };
    let (file, src, start) = sources.locate(span.start);
    let span = start..start + (span.end.saturating_sub(span.start));
    let (line, col) = line_col(src, span.start);
    writeln!(f, "{level}: {}", d.message)?;
    writeln!(f, "  --> {}:{line}:{col}", display_path(file))?;
    let text = src.lines().nth(line - 1).unwrap_or("");
    let gutter = line.to_string().len();
    let width = {
        let end = floor_char_boundary(src, span.end.min(src.len()));
        let start = floor_char_boundary(src, span.start.min(src.len()));
        let on_line = src[start..end].split('\n').next().unwrap_or("");
        on_line.chars().count().max(1)
    };
    writeln!(f, "{:gutter$} |", "")?;
    writeln!(f, "{line} | {text}")?;
    writeln!(
        f,
        "{:gutter$} | {}{}",
        "",
        " ".repeat(col - 1),
        "^".repeat(width)
    )?;
    if let Some(help) = &d.help {
        writeln!(f, "{:gutter$} = help: {help}", "")?;
    }
    Ok(())
}

/// One error, placed: the file it is in and its line and column (or the definition and field
/// it is about), for `validate --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl ConfigError {
    pub fn placed(&self) -> Vec<Placed> {
        let sources = Sources {
            file: &self.file,
            text: &self.source_text,
            parts: &self.parts,
        };
        self.diagnostics
            .iter()
            .map(|d| {
                let (file, line, column) = match &d.span {
                    Span::File(range) => {
                        let (file, src, at) = sources.locate(range.start);
                        let (l, c) = line_col(src, at);
                        (display_path(file), Some(l), Some(c))
                    }
                    Span::Field { owner, path } => (
                        if path.is_empty() {
                            owner.to_string()
                        } else {
                            format!("{owner}, field `{path}`")
                        },
                        None,
                        None,
                    ),
                };
                Placed {
                    file,
                    line,
                    column,
                    message: d.message.clone(),
                    help: d.help.clone(),
                }
            })
            .collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            let sources = Sources {
                file: &self.file,
                text: &self.source_text,
                parts: &self.parts,
            };
            render_one(f, sources, d, "error")?;
            writeln!(f)?;
        }
        let n = self.diagnostics.len();
        // Errors only in one definition are that definition's, not the file's.
        let mut owners = self.diagnostics.iter().map(|d| match &d.span {
            Span::Field { owner, .. } => Some(owner.to_string()),
            Span::File(_) => None,
        });
        let first = owners.next().flatten();
        let whose = match first {
            Some(o) if owners.all(|x| x.as_deref() == Some(o.as_str())) => o,
            _ => display_path(&self.file),
        };
        write!(f, "{whose}: {n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl ConfigError {
    /// Sort the diagnostics: the file's by position, then the definitions' in the order found.
    pub(crate) fn sort(&mut self) {
        self.diagnostics.sort_by_key(|d| match &d.span {
            Span::File(r) => (0, r.start),
            Span::Field { .. } => (1, 0),
        });
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

/// The closest candidate to `word`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 3)); // after the two-byte é
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("comand", ["command", "env"]), Some("command"));
        assert_eq!(did_you_mean("xyz", ["command", "env"]), None);
    }
}
