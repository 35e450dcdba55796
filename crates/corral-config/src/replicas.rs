//! `replicas = N`: a unit written once and run N times. Done on the document, before
//! validation: `NAME` becomes `NAME-0` … `NAME-(N-1)`, each with `CORRAL_REPLICA` in its
//! environment and `{replica}` filled in its strings; a dependency on `NAME` becomes one on
//! every replica. Each replica is then an ordinary unit (its own process, log, auto port).
//!
//! A formation (`up -m web=3`, `corral scale web 3`) sets the count from outside, over what the
//! file says; a count of 0 keeps the unit, disabled.

use std::collections::BTreeMap;

use corral_engine::Kind;

use crate::diag::{Diagnostic, did_you_mean};
use crate::node::{Key, Node, Span, Value, get};
use crate::read::{RawProject, RawUnit, valid_name};

/// The most replicas one unit may have.
pub const MAX_REPLICAS: i64 = 1000;

/// Expand the units of `raw` that have `replicas`, or a count in `formation`.
pub fn expand(
    raw: &mut RawProject,
    formation: &BTreeMap<String, usize>,
    diags: &mut Vec<Diagnostic>,
) {
    for name in formation.keys() {
        match raw.units.iter().find(|u| &u.name == name) {
            Some(u) if matches!(u.kind, Kind::Service | Kind::Task) => {}
            Some(u) => diags.push(Diagnostic::new(
                u.name_span.clone(),
                format!("`{name}` is a target: only services and tasks have replicas"),
            )),
            None => {
                let names: Vec<&str> = raw
                    .units
                    .iter()
                    .filter(|u| matches!(u.kind, Kind::Service | Kind::Task))
                    .map(|u| u.name.as_str())
                    .collect();
                let help = match did_you_mean(name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the services and tasks here: {}", names.join(", ")),
                };
                let d = Diagnostic::new(
                    Span::Field {
                        owner: "the formation (`up -m`, `corral scale`)".into(),
                        path: String::new(),
                    },
                    format!("it names `{name}`, which is not a service or task here"),
                )
                .with_help(help);
                diags.push(d);
            }
        }
    }
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut units = Vec::with_capacity(raw.units.len());
    for unit in std::mem::take(&mut raw.units) {
        let count = match formation.get(&unit.name) {
            Some(0) => {
                units.push(disabled(without_replicas(unit)));
                continue;
            }
            Some(&c) if c as i64 <= MAX_REPLICAS => Some(c),
            Some(_) => {
                diags.push(Diagnostic::new(
                    unit.name_span.clone(),
                    format!(
                        "a formation may run at most {MAX_REPLICAS} of `{}`",
                        unit.name
                    ),
                ));
                continue;
            }
            None => None,
        };
        let n = get(&unit.body, "replicas");
        if count.is_none() && n.is_none() {
            units.push(unit);
            continue;
        }
        let count = match count {
            Some(c) => c,
            None => match n.map(|n| &n.value) {
                Some(Value::Integer(Some(c))) if (1..=MAX_REPLICAS).contains(c) => *c as usize,
                _ => {
                    let span = n.map_or(unit.name_span.clone(), |n| n.span.clone());
                    diags.push(
                        Diagnostic::new(
                            span,
                            format!("`replicas` must be a whole number from 1 to {MAX_REPLICAS}"),
                        )
                        .with_help("e.g. `replicas = 3` runs NAME-0, NAME-1 and NAME-2"),
                    );
                    units.push(without_replicas(unit));
                    continue;
                }
            },
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

/// A unit scaled to 0: kept (its dependents still name it), but not started.
fn disabled(mut unit: RawUnit) -> RawUnit {
    unit.body.retain(|(k, _)| k.name != "disabled");
    unit.body.push((
        Key {
            name: "disabled".into(),
            span: unit.name_span.clone(),
        },
        Node {
            value: Value::Bool(true),
            span: unit.name_span.clone(),
        },
    ));
    unit
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
