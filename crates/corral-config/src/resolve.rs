//! Stage 3, resolve: dependency names into unit ids, conditions checked against what the
//! dependency is, and cycles rejected with their path.

use std::collections::HashMap;

use corral_engine::{Condition, Dependency, Kind, UnitId};

use crate::diag::{Diagnostic, did_you_mean};
use crate::node::Span;
use crate::validate::Draft;

/// Turn dependency names into ids (in place), reporting unknown names, impossible conditions
/// and cycles.
pub fn dependencies(diags: &mut Vec<Diagnostic>, drafts: &mut [Draft]) {
    let index: HashMap<String, usize> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| (d.spec.name.clone(), i))
        .collect();
    let names: Vec<String> = drafts.iter().map(|d| d.spec.name.clone()).collect();
    let mut edges: Vec<Vec<(usize, Span)>> = vec![Vec::new(); drafts.len()];
    for i in 0..drafts.len() {
        let deps = std::mem::take(&mut drafts[i].deps);
        drafts[i].spec.deps.clear();
        let me = drafts[i].spec.name.clone();
        let my_kind = drafts[i].spec.kind;
        for (dn, span, cond) in &deps {
            let Some(&j) = index.get(dn) else {
                let msg = format!("{} `{me}` depends on unknown unit `{dn}`", my_kind.as_str());
                let help = match did_you_mean(dn, names.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("defined units: {}", names.join(", ")),
                };
                diags.push(Diagnostic::new(span.clone(), msg).with_help(help));
                continue;
            };
            if j == i {
                diags.push(Diagnostic::new(
                    span.clone(),
                    format!("`{me}` depends on itself"),
                ));
                continue;
            }
            let dep_kind = drafts[j].spec.kind;
            let condition = cond.unwrap_or(default_condition(dep_kind));
            if let Some(d) = never_met(dn, span, condition, dep_kind, &drafts[j].def) {
                diags.push(d);
            }
            edges[i].push((j, span.clone()));
            drafts[i].spec.deps.push(Dependency {
                unit: UnitId(j),
                condition,
            });
        }
        // Kept by name: the same drafts are resolved again when definitions are added.
        drafts[i].deps = deps;
    }
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle.iter().map(|(u, _)| names[*u].as_str()).collect();
        let span = cycle[0].1.clone();
        diags.push(
            Diagnostic::new(
                span,
                format!("dependency cycle: {} → {}", path.join(" → "), path[0]),
            )
            .with_help("remove one of these dependencies"),
        );
    }
}

/// What a dependency written without a condition waits for: a list entry means `started`,
/// except on a task, where it means "ran and passed".
pub(crate) fn default_condition(dep_kind: Kind) -> Condition {
    if dep_kind == Kind::Task {
        Condition::CompletedSuccessfully
    } else {
        Condition::Started
    }
}

/// Why a dependency on `dn` (a `dep_kind` defined as `dep`) with `condition` could never be
/// met, if it could not.
pub(crate) fn never_met(
    dn: &str,
    span: &Span,
    condition: Condition,
    dep_kind: Kind,
    dep: &crate::model::UnitDef,
) -> Option<Diagnostic> {
    match condition {
        Condition::Completed | Condition::CompletedSuccessfully if dep_kind == Kind::Target => {
            Some(Diagnostic::new(
                span.clone(),
                format!("target `{dn}` has no process, so it never completes"),
            ))
        }
        Condition::LogReady if dep.log_ready.is_none() => Some(
            Diagnostic::new(span.clone(), format!("`{dn}` has no `log_ready` pattern"))
                .with_help(format!("add `log_ready = \"regex\"` to `{dn}`")),
        ),
        _ => None,
    }
}

/// A cycle as (unit, span of its edge to the next unit), if there is one.
fn find_cycle(edges: &[Vec<(usize, Span)>]) -> Option<Vec<(usize, Span)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: a stack of (node, next edge index).
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some((to, _)) = edges[node].get(*next) {
                let to = *to;
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::Open;
                        stack.push((to, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == to)?;
                        return Some(
                            stack[from..]
                                .iter()
                                .map(|&(n, k)| (n, edges[n][k - 1].1.clone()))
                                .collect(),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Two units writing one log file would interleave and rotate each other's lines.
pub fn log_files(diags: &mut Vec<Diagnostic>, drafts: &[Draft], state_dir: &std::path::Path) {
    // Without a `log_file` of its own each unit's log is named by its name, and names are
    // unique: nothing to compare (and no path to make for each unit, on every change).
    if drafts.iter().all(|d| d.def.log_file().is_none()) {
        return;
    }
    let mut seen: HashMap<std::path::PathBuf, &str> = HashMap::new();
    for d in drafts {
        let path = crate::model::log_path(state_dir, &d.def.name, d.def.log_file());
        match (seen.get(&path), &d.log_span) {
            (Some(other), Some(span)) => diags.push(
                Diagnostic::new(
                    span.clone(),
                    format!("`{}` is the log file of `{other}` already", path.display()),
                )
                .with_help("give each unit its own log file (`{replica}` for replicas)"),
            ),
            _ => {
                seen.insert(path, &d.spec.name);
            }
        }
    }
}

/// Two units declaring the same fixed port could never both run: the second is refused.
pub fn ports(diags: &mut Vec<Diagnostic>, drafts: &[Draft]) {
    let mut seen: HashMap<u16, &str> = HashMap::new();
    for d in drafts {
        for (port, span) in &d.port_spans {
            match seen.get(port) {
                Some(other) if *other != d.spec.name => diags.push(
                    Diagnostic::new(
                        span.clone(),
                        format!("port {port} is declared by `{other}` already"),
                    )
                    .with_help("give one of them another port, or `\"auto\"`"),
                ),
                _ => {
                    seen.insert(*port, &d.spec.name);
                }
            }
        }
    }
}
