//! The task table against the AdCP 3.2 manifest of the installed `adcp` wheel: every tool it
//! marks `mutating` with `async_response_schemas` (a `*-async-response-*` schema: an answer
//! can be `submitted`, `working` or `input-required`) is a task operations run, with the
//! request schema's required fields. Read at test time; the wheel is never copied here.

use super::task::{TASKS, TaskKind};
use crate::testing::adcp::{package, read_json};
use serde_json::Value;
use std::collections::BTreeMap;

#[test]
fn the_table_holds_every_async_mutating_task_of_the_3_2_manifest() {
    let schemas = package().join("_schemas/3.2");
    let manifest = read_json(&schemas.join("manifest.json"));
    assert!(
        manifest["adcp_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.2")),
        "{}",
        manifest["adcp_version"]
    );
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, tool) in manifest["tools"].as_object().unwrap() {
        let asynchronous = tool["async_response_schemas"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if tool["mutating"] != true || !asynchronous {
            continue;
        }
        let request = read_json(&schemas.join(tool["request_schema"].as_str().unwrap()));
        let mut required: Vec<String> = request["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|f| *f != "idempotency_key")
            .map(str::to_string)
            .collect();
        required.sort();
        want.insert(name.clone(), required);
    }
    let have: BTreeMap<String, Vec<String>> = TASKS
        .iter()
        .map(|t| {
            let mut r: Vec<String> = t.required.iter().map(|f| f.to_string()).collect();
            r.sort();
            (t.name.to_string(), r)
        })
        .collect();
    assert_eq!(have, want);
}

#[test]
fn the_table_is_in_declaration_order_under_the_stored_names() {
    for (i, t) in TASKS.iter().enumerate() {
        assert_eq!(t.kind as usize, i, "{}", t.name);
        assert_eq!(serde_json::to_value(t.kind).unwrap(), t.name);
        assert_eq!(TaskKind::parse(t.name), Some(t.kind));
        assert!(t.deadline_ms > 0);
    }
}
