//! The task table against the AdCP 3.2 manifest of the installed `adcp` wheel: every tool it
//! marks `mutating` with `async_response_schemas` (a `*-async-response-*` schema: an answer
//! can be `submitted`, `working` or `input-required`) is a task operations run, with the
//! request schema's required fields. Read at test time; the wheel is never copied here.

use super::task::{TASKS, TaskKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The installed `adcp` package: `ADCP_PYTHON`, else the venv the test script creates.
fn adcp_package() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("ADCP_PYTHON")
        .unwrap_or_else(|_| root.join(".venv/bin/python").to_string_lossy().into_owned());
    let out = std::process::Command::new(&python)
        .args(["-c", "import adcp,os;print(os.path.dirname(adcp.__file__))"])
        .output()
        .unwrap_or_else(|e| panic!("{python} runs (set ADCP_PYTHON to the venv with adcp): {e}"));
    assert!(out.status.success(), "{python} imports adcp");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn read(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_table_holds_every_async_mutating_task_of_the_3_2_manifest() {
    let schemas = adcp_package().join("_schemas/3.2");
    let manifest = read(schemas.join("manifest.json"));
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
        let request = read(schemas.join(tool["request_schema"].as_str().unwrap()));
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
