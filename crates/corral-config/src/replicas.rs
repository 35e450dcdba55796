//! `replicas = N`: a unit written once and run N times. Done on the document, before
//! validation: `NAME` becomes `NAME-0` … `NAME-(N-1)`, each with `CORRAL_REPLICA` in its
//! environment and `{replica}` filled in its strings; a dependency on `NAME` becomes one on
//! every replica. Each replica is then an ordinary unit (its own process, log, auto port).

use crate::diag::Diagnostic;
use crate::node::{Key, Node, Value, get};
use crate::read::{RawProject, RawUnit, valid_name};

/// The most replicas one unit may have.
pub const MAX_REPLICAS: i64 = 1000;

/// Expand the units of `raw` that have `replicas`.
pub fn expand(raw: &mut RawProject, diags: &mut Vec<Diagnostic>) {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut units = Vec::with_capacity(raw.units.len());
    for unit in std::mem::take(&mut raw.units) {
        let Some(n) = get(&unit.body, "replicas") else {
            units.push(unit);
            continue;
        };
        let count = match n.value {
            Value::Integer(Some(c)) if (1..=MAX_REPLICAS).contains(&c) => c as usize,
            _ => {
                diags.push(
                    Diagnostic::new(
                        n.span.clone(),
                        format!("`replicas` must be a whole number from 1 to {MAX_REPLICAS}"),
                    )
                    .with_help("e.g. `replicas = 3` runs NAME-0, NAME-1 and NAME-2"),
                );
                units.push(without_replicas(unit));
                continue;
            }
        };
        if count == 1 {
            let mut one = fill(&without_replicas(unit.clone()), 0);
            one.name = unit.name;
            units.push(one);
            continue;
        }
        let names: Vec<String> = (0..count).map(|i| format!("{}-{i}", unit.name)).collect();
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            diags.push(Diagnostic::new(
                unit.name_span.clone(),
                format!("`{bad}` (a replica's name) is not a valid name"),
            ));
            continue;
        }
        for (i, name) in names.iter().enumerate() {
            let mut r = fill(&without_replicas(unit.clone()), i);
            r.name = name.clone();
            units.push(r);
        }
        groups.push((unit.name, names));
    }
    // A dependency on a group is one on each of its replicas.
    for unit in &mut units {
        for (k, v) in unit.body.iter_mut() {
            if k.name == "depends_on" {
                *v = retarget(v, &groups);
            }
        }
    }
    // A unit written as `web-0` beside `web` with replicas would be defined twice.
    for (i, u) in units.iter().enumerate() {
        if units[..i].iter().any(|x| x.name == u.name) {
            diags.push(Diagnostic::new(
                u.name_span.clone(),
                format!("`{}` is defined twice (also as a replica)", u.name),
            ));
        }
    }
    raw.units = units;
}

fn without_replicas(mut unit: RawUnit) -> RawUnit {
    unit.body.retain(|(k, _)| k.name != "replicas");
    unit
}

/// Replica `i`: `{replica}` filled, `CORRAL_REPLICA` in its `env`.
fn fill(unit: &RawUnit, i: usize) -> RawUnit {
    let vars = [("replica".to_string(), i.to_string())];
    let mut body: Vec<(Key, Node)> = unit
        .body
        .iter()
        .map(|(k, v)| {
            let v = match (k.name.as_str(), &v.value) {
                ("command", Value::String(_)) => v.fill_shell(&vars),
                _ => v.fill(&vars),
            };
            (k.clone(), v)
        })
        .collect();
    let value = Node {
        value: Value::String(i.to_string()),
        span: unit.name_span.clone(),
    };
    let var = Key {
        name: "CORRAL_REPLICA".into(),
        span: unit.name_span.clone(),
    };
    match body.iter_mut().find(|(k, _)| k.name == "env") {
        Some((
            _,
            Node {
                value: Value::Table(t),
                ..
            },
        )) => {
            t.retain(|(k, _)| k.name != "CORRAL_REPLICA");
            t.push((var, value));
        }
        Some(_) => {} // not a table: the validator says so
        None => body.push((
            Key {
                name: "env".into(),
                span: unit.name_span.clone(),
            },
            Node {
                value: Value::Table(vec![(var, value)]),
                span: unit.name_span.clone(),
            },
        )),
    }
    RawUnit {
        body,
        ..unit.clone()
    }
}

fn retarget(deps: &Node, groups: &[(String, Vec<String>)]) -> Node {
    let members = |name: &str| groups.iter().find(|(g, _)| g == name).map(|(_, m)| m);
    let value = match &deps.value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .flat_map(|item| match &item.value {
                    Value::String(s) if members(s).is_some() => members(s)
                        .into_iter()
                        .flatten()
                        .map(|m| Node {
                            value: Value::String(m.clone()),
                            span: item.span.clone(),
                        })
                        .collect::<Vec<_>>(),
                    _ => vec![item.clone()],
                })
                .collect(),
        ),
        Value::Table(t) => Value::Table(
            t.iter()
                .flat_map(|(k, v)| match members(&k.name) {
                    Some(ms) => ms
                        .iter()
                        .map(|m| {
                            (
                                Key {
                                    name: m.clone(),
                                    span: k.span.clone(),
                                },
                                v.clone(),
                            )
                        })
                        .collect::<Vec<_>>(),
                    None => vec![(k.clone(), v.clone())],
                })
                .collect(),
        ),
        other => other.clone(),
    };
    Node {
        value,
        span: deps.span.clone(),
    }
}
