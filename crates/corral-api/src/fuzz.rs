//! Every parser of request input, fed random input (proptest: cargo-fuzz needs a nightly
//! toolchain): an answer or a 4xx with a reason, never a panic. Bodies are made both as byte
//! soup and as random JSON of the right general shape, which reaches deeper.

use proptest::prelude::*;
use serde_json::Value;

use crate::query::{params, parse_signal, requested_signal};
use crate::routes::procs::spec;
use crate::routes::units::definition;

/// Random JSON, a few levels deep, with the keys corral's bodies use (and some it does not).
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("command".to_string()),
        Just("cwd".to_string()),
        Just("env".to_string()),
        Just("ports".to_string()),
        Just("readiness".to_string()),
        Just("restart".to_string()),
        Just("depends_on".to_string()),
        Just("log".to_string()),
        Just("stop".to_string()),
        Just("signal".to_string()),
        Just("timeout".to_string()),
        Just("http".to_string()),
        Just("max_restarts".to_string()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("auto".into())),
        Just(Value::String("{port}".into())),
        Just(Value::String("1s".into())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A service definition, through the API's reader and the whole config validator.
    #[test]
    fn definitions_never_panic(body in json(), soup in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = serde_json::to_vec(&serde_json::json!({"name": "x"}).as_object().cloned().map(|mut m| {
            if let Value::Object(b) = &body { m.extend(b.clone()); }
            Value::Object(m)
        })).unwrap_or_default();
        if let Ok((name, value)) = definition(&text, None) {
            let def = corral_config::Definition::from_json(&name, &value, "fuzz");
            let project = base_project();
            let _ = project.with_definitions(&[def]);
        }
        let _ = definition(&soup, Some("x"));
    }

    /// An ad-hoc process request, and a signal in a query or a body.
    #[test]
    fn process_and_signal_requests_never_panic(body in json(), raw in ".{0,100}", soup in proptest::collection::vec(any::<u8>(), 0..100)) {
        let _ = spec(&serde_json::to_vec(&body).unwrap_or_default());
        let _ = spec(&soup);
        let _ = requested_signal(Some(&raw), &serde_json::to_vec(&body).unwrap_or_default());
        let _ = requested_signal(None, &soup);
        let _ = parse_signal(&raw);
        let _ = params(Some(&raw), &["wait", "timeout", "dependents"]);
    }

    /// The other project file formats: process-compose files (random YAML-ish text, and random
    /// documents under `processes:`), Procfiles, and their export back to TOML.
    #[test]
    fn other_formats_never_panic(
        soup in "[a-z_:\\-\\[\\]{}\"' \n$#&*!|>0-9.=%]{0,300}",
        doc in json(),
        uni in "\\PC{0,120}",
    ) {
        let dir = std::env::temp_dir();
        let read = corral_config::formats::ReadOptions::default();
        let yaml = dir.join("process-compose.yaml");
        let procfile = dir.join("Procfile");
        let _ = corral_config::parse_project_with(&yaml, &soup, &Default::default(), &read);
        let _ = corral_config::parse_project_with(&procfile, &soup, &Default::default(), &read);
        // Characters of any width (spans are bytes; the YAML parser counts characters).
        let _ = corral_config::parse_project_with(&yaml, &uni, &Default::default(), &read);
        let uni_doc = format!("processes:\n  {uni}:\n    command: \"{uni}\"\n");
        let _ = corral_config::parse_project_with(&yaml, &uni_doc, &Default::default(), &read);
        // JSON is YAML: any document as the processes.
        let text = format!("processes: {}\n", serde_json::to_string(&doc).unwrap_or_default());
        let _ = corral_config::parse_project_with(&yaml, &text, &Default::default(), &read);
        let root = std::path::Path::new("/");
        if let Ok((d, _)) = corral_config::formats::document(
            corral_config::formats::Format::ProcessCompose,
            &text,
            root,
            &Default::default(),
            &read,
        ) {
            let _ = corral_config::formats::emit::toml(&d, &[]);
        }
    }

    /// The other bodies: runs, instances, stdin input.
    #[test]
    fn other_bodies_never_panic(body in json()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let _ = serde_json::from_slice::<corral_proto::wire::RunRequest>(&bytes);
        let _ = serde_json::from_slice::<corral_proto::wire::InstanceRequest>(&bytes);
        let _ = serde_json::from_slice::<corral_proto::wire::Input>(&bytes);
    }
}

/// A small valid project for definitions to join.
fn base_project() -> corral_config::Project {
    let dir = std::env::temp_dir();
    corral_config::parse_project(
        &dir.join("corral.toml"),
        "[services.db]\ncommand = 'x'\nports = [7000]\n",
        &Default::default(),
    )
    .expect("the base project is valid")
}
