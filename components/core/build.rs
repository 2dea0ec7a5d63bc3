//! The OpenAPI document is kept readable in `src/api/openapi.json` and served minified: its
//! whitespace was half of it, and the operations component has a 1 MiB budget.

fn main() {
    let source = "src/api/openapi.json";
    println!("cargo::rerun-if-changed={source}");
    let text = std::fs::read_to_string(source).expect("openapi.json is readable");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"))
        .join("openapi.min.json");
    std::fs::write(out, doc.to_string()).expect("OUT_DIR is writable");
}
