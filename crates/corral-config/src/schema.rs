//! `corral schema`: a JSON Schema of corral.toml for editors (taplo / Even Better TOML read it
//! from a `#:schema` line). Built from the same key lists the validator checks against, so a
//! key cannot be accepted by one and unknown to the other (a test holds every listed key to a
//! type here). The schema checks shape; `corral validate` checks meaning (names, cycles, ports).

use serde_json::{Value, json};

use crate::read::TOP_KEYS;
use crate::validate::{
    LIMIT_KEYS, LOG_KEYS, PROBE_KEYS, RESTART_KEYS, SERVICE_KEYS, STOP_KEYS, TARGET_KEYS,
    TASK_KEYS, TEMPLATE_ONLY_KEYS,
};

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn command() -> Value {
    json!({"oneOf": [
        {"type": "string", "description": "run with the unit's shell (default `sh -c`)"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "run directly"}
    ]})
}

fn duration() -> Value {
    json!({"type": "string", "description": "a duration: `500ms`, `10s`, `5m`"})
}

fn object(keys: &[&str], of: impl Fn(&str) -> Option<Value>) -> Value {
    let props: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), of(k).unwrap_or(json!({}))))
        .collect();
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

/// The schema of one key of a unit (service, task, target or template).
pub(crate) fn unit_key(key: &str) -> Option<Value> {
    let boolean = json!({"type": "boolean"});
    let string = json!({"type": "string"});
    Some(match key {
        "command" | "shutdown_command" | "on_ready" | "on_failure" | "on_exit" | "on_restart" => {
            command()
        }
        "workdir" | "log_ready" | "description" | "user" | "group" | "namespace" | "image"
        | "log_file" | "schedule" => string,
        "umask" => json!({"type": "string", "pattern": "^[0-7]{3,4}$"}),
        "start_timeout" | "watchdog" | "watch_debounce" | "setup_timeout" | "hook_timeout" => {
            duration()
        }
        "kill_others" | "disabled" | "exit_on_failure" | "exit_on_end" | "exit_on_skipped"
        | "allow_failure" | "daemon" => boolean,
        "env" => {
            json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}})
        }
        "env_file" => json!({"oneOf": [{"type": "string"}, strings()]}),
        "depends_on" => json!({"oneOf": [
            strings(),
            {"type": "object", "additionalProperties": {"enum":
                ["started", "healthy", "completed", "completed_successfully", "log_ready"]}}
        ]}),
        "ports" => json!({"type": "array", "items": {"oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 65535}, {"const": "auto"}]}}),
        "readiness" | "liveness" => object(PROBE_KEYS, probe_key),
        "restart" => json!({"oneOf": [
            {"enum": ["on-failure", "always", "never", "no"]},
            object(RESTART_KEYS, restart_key)
        ]}),
        "stop" => object(STOP_KEYS, stop_key),
        "log" => object(LOG_KEYS, log_key),
        "shell" => json!({"oneOf": [{"type": "string"}, strings()]}),
        "max_memory" => {
            json!({"type": ["string", "integer"], "description": "`512MiB`, `2GiB` or bytes"})
        }
        "overlap" => json!({"enum": ["skip", "queue", "kill"]}),
        "limits" => object(LIMIT_KEYS, |key| {
            Some(match key {
                "cpus" => json!({"type": "number", "minimum": 0.01, "maximum": 1024,
                    "description": "CPUs as a cgroup limit (cpu.max), where a cgroup is delegated"}),
                "memory" => json!({"type": ["string", "integer"],
                    "description": "`512MiB`: a cgroup limit (memory.max), where a cgroup is delegated"}),
                _ => json!({"oneOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "description": "a size (`64MiB`) or `unlimited`"}
                ]}),
            })
        }),
        "watch" | "watch_ignore" | "kill_filters" => strings(),
        "replicas" => {
            json!({"type": "integer", "minimum": 1, "maximum": crate::replicas::MAX_REPLICAS})
        }
        "params" | "files" => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        "setup" => json!({"type": "array", "items": command()}),
        "port_range" => {
            json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}, "minItems": 2, "maxItems": 2})
        }
        _ => return None,
    })
}

fn stop_key(key: &str) -> Option<Value> {
    Some(match key {
        "signal" => json!({"type": ["string", "integer"]}),
        "timeout" => duration(),
        "parent_only" => json!({"type": "boolean"}),
        _ => return None,
    })
}

fn log_key(key: &str) -> Option<Value> {
    Some(match key {
        "lines" | "keep_files" => json!({"type": "integer", "minimum": 0}),
        "max_file_size" => json!({"type": ["string", "integer"]}),
        _ => return None,
    })
}

fn probe_key(key: &str) -> Option<Value> {
    Some(match key {
        "tcp" => json!({"type": ["string", "integer"]}),
        "http" | "log" | "body" | "output" => json!({"type": "string"}),
        "exec" => command(),
        "notify" => json!({"const": true}),
        "status" => json!({"type": "integer", "minimum": 100, "maximum": 599}),
        "insecure" => json!({"type": "boolean"}),
        "start_period" | "interval" | "timeout" => duration(),
        "failure_threshold" | "success_threshold" => json!({"type": "integer", "minimum": 1}),
        _ => return None,
    })
}

fn restart_key(key: &str) -> Option<Value> {
    Some(match key {
        "mode" => json!({"enum": ["on-failure", "always", "never", "no"]}),
        "max_restarts" | "startup_max_restarts" => json!({"type": "integer", "minimum": 0}),
        "startup_grace" | "backoff_initial" | "backoff_max" | "reset_after" => duration(),
        "jitter" => json!({"type": "number", "minimum": 0}),
        _ => return None,
    })
}

/// The whole schema.
pub fn json_schema() -> Value {
    let units = |keys: &[&str], extra: &[&str]| {
        let all: Vec<&str> = keys.iter().chain(extra).copied().collect();
        json!({"type": "object", "additionalProperties": object(&all, unit_key)})
    };
    let template_keys: Vec<&str> = SERVICE_KEYS
        .iter()
        .chain(TEMPLATE_ONLY_KEYS)
        .copied()
        .collect();
    let top = |k: &str| -> Option<Value> {
        Some(match k {
            "services" => units(SERVICE_KEYS, &["replicas"]),
            "tasks" => units(TASK_KEYS, &["replicas"]),
            "targets" => units(TARGET_KEYS, &[]),
            "templates" => units(&template_keys, &[]),
            "env" | "env_file" | "log" | "shell" => unit_key(k)?,
            _ => return None,
        })
    };
    let mut schema = object(TOP_KEYS, top);
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema["title"] = json!("corral.toml");
    schema["description"] = json!(
        "A corral project: services, tasks, targets and templates. `corral validate` checks the rest (names, cycles, ports)."
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the validator accepts has a type here: the two cannot drift apart.
    #[test]
    fn every_key_has_a_type() {
        for k in SERVICE_KEYS
            .iter()
            .chain(TASK_KEYS)
            .chain(TARGET_KEYS)
            .chain(TEMPLATE_ONLY_KEYS)
            .chain(&["replicas", "env", "env_file", "log", "shell"])
        {
            assert!(unit_key(k).is_some(), "no schema for unit key `{k}`");
        }
        for k in PROBE_KEYS {
            assert!(probe_key(k).is_some(), "no schema for probe key `{k}`");
        }
        for k in RESTART_KEYS {
            assert!(restart_key(k).is_some(), "no schema for restart key `{k}`");
        }
        for k in STOP_KEYS {
            assert!(stop_key(k).is_some(), "no schema for stop key `{k}`");
        }
        for k in LOG_KEYS {
            assert!(log_key(k).is_some(), "no schema for log key `{k}`");
        }
        let s = json_schema();
        for k in TOP_KEYS {
            assert!(s["properties"][k].is_object(), "{k}");
        }
        assert_eq!(
            s["properties"]["services"]["additionalProperties"]["additionalProperties"],
            false
        );
    }
}
