//! AdCP JSON Schema validation for tests, against the spec's own schemas of a release: 3.1
//! from the spec checkout `<repo>/../shared/adcp/schemas-3.1.19`, 3.0 and 3.2 from the
//! installed `adcp` Python package (`_schemas/3.0`, `_schemas/3.2`). None is ever copied into
//! the repository.
//!
//! Tools map to schemas through each release's `manifest.json`. Schemas name each other by
//! `$ref`s under `/schemas/<patch release>/` (relative in 3.1.19, `/schemas/3.1.19/core/...`;
//! absolute in 3.2, `https://adcontextprotocol.org/schemas/3.2.4/core/...`); a retriever
//! serves those from the local directory, so nothing is ever fetched over the network. Every
//! keyword is honoured as written, `additionalProperties: false` and `format` included.

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The releases whose schemas the tests can open.
pub const RELEASES: [&str; 3] = ["3.0", "3.1", "3.2"];

/// Where a release's schemas are (`3.1` is the 3.1.19 checkout beside the repository; 3.0
/// and 3.2 are the installed package's).
pub fn schemas_dir(release: &str) -> PathBuf {
    match release {
        "3.1" => crate::repo_root().join("../shared/adcp/schemas-3.1.19"),
        "3.0" | "3.2" => adcp_package().join(format!("_schemas/{release}")),
        other => panic!("no AdCP {other} schemas (have {RELEASES:?})"),
    }
}

/// The installed `adcp` package, through the project's Python.
fn adcp_package() -> PathBuf {
    let out = crate::python(
        &["-c", "import adcp,os;print(os.path.dirname(adcp.__file__))"],
        "",
    );
    PathBuf::from(out.trim())
}

/// Which side of a tool call a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Serves `/schemas/<version>/<path>` references from the local schema directory.
struct LocalRetriever {
    dir: PathBuf,
    version: String,
}

impl Retrieve for LocalRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().as_str();
        let prefix = format!("/schemas/{}/", self.version);
        let rel = path
            .strip_prefix(&prefix)
            .filter(|r| !r.split('/').any(|seg| seg == ".."))
            .ok_or_else(|| format!("not an AdCP {} schema reference: {uri}", self.version))?;
        read_json(&self.dir.join(rel))
    }
}

fn read_json(path: &Path) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// One failed check: where in the document, which schema keyword, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// JSON Pointer into the validated document (`""` is its root).
    pub instance_path: String,
    /// JSON Pointer to the failing keyword, through the `$ref`s taken.
    pub schema_path: String,
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.instance_path.is_empty() {
            "/"
        } else {
            &self.instance_path
        };
        write!(f, "at {at}: {} (schema {})", self.message, self.schema_path)
    }
}

/// The outcome of checking one document against one schema. A failure keeps both the
/// decisive errors and the detail under them (what each `oneOf`/`anyOf` branch rejected).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub schema: String,
    pub errors: Vec<SchemaError>,
    pub detail: Vec<SchemaError>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "against {}:", self.schema)?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        if !self.detail.is_empty() {
            writeln!(f, "  detail (every failing keyword, branches included):")?;
            for e in &self.detail {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}

/// One release's schemas, compiled on first use and kept.
pub struct Schemas {
    dir: PathBuf,
    manifest: Value,
    /// The patch release the manifest describes (`3.1.19`, `3.2.4`): what `$ref`s name.
    version: String,
    compiled: Mutex<HashMap<String, Arc<Validator>>>,
}

impl Schemas {
    /// Opens the schemas of `release` (`3.0`, `3.1` or `3.2`); panics with the path when they are
    /// missing, since every conformance check depends on them.
    pub fn open(release: &str) -> Schemas {
        let dir = schemas_dir(release);
        let manifest = read_json(&dir.join("manifest.json"))
            .unwrap_or_else(|e| panic!("AdCP {release} schemas not found: {e}"));
        let version = manifest["adcp_version"]
            .as_str()
            .filter(|v| v.strip_prefix(release).is_some_and(|p| p.starts_with('.')))
            .unwrap_or_else(|| panic!("{} is not AdCP {release}", dir.display()))
            .to_string();
        Schemas {
            dir,
            manifest,
            version,
            compiled: Mutex::default(),
        }
    }

    /// Whether the release's manifest has `tool`.
    pub fn has_tool(&self, tool: &str) -> bool {
        self.manifest["tools"][tool].is_object()
    }

    /// The patch release these schemas are (`3.1.19`, `3.2.4`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The schemas a tool's document must match, relative to the schema directory.
    ///
    /// A request has one. A response is the tool's response schema (synchronous success,
    /// error, or `submitted` task), except that an answer whose envelope `status` is `working`
    /// or `input-required` is the protocol envelope plus the tool's async schema for that
    /// status, when the tool has one. (The async schemas alone accept any object, so "any of
    /// the tool's schemas" would accept anything.)
    pub fn tool_schemas(&self, tool: &str, direction: Direction, doc: &Value) -> Vec<String> {
        let entry = &self.manifest["tools"][tool];
        assert!(
            entry.is_object(),
            "{tool} is not an AdCP {} tool",
            self.version
        );
        let field = |k: &str| entry[k].as_str().map(str::to_string);
        if direction == Direction::Request {
            return field("request_schema").into_iter().collect();
        }
        let interim = doc
            .get("status")
            .and_then(Value::as_str)
            .filter(|s| ["working", "input-required"].contains(s))
            .and_then(|status| {
                let suffix = format!("-async-response-{status}.json");
                entry["async_response_schemas"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|s| s.ends_with(&suffix))
            });
        match interim {
            Some(schema) => vec!["core/protocol-envelope.json".into(), schema.to_string()],
            None => field("response_schema").into_iter().collect(),
        }
    }

    fn validator(&self, schema: &str) -> Arc<Validator> {
        if let Some(v) = self.compiled.lock().expect("lock").get(schema) {
            return v.clone();
        }
        let doc = read_json(&self.dir.join(schema)).unwrap_or_else(|e| panic!("{e}"));
        let v = jsonschema::draft7::options()
            .with_retriever(LocalRetriever {
                dir: self.dir.clone(),
                version: self.version.clone(),
            })
            .should_validate_formats(true)
            .build(&doc)
            .unwrap_or_else(|e| panic!("{schema} does not compile: {e}"));
        let v = Arc::new(v);
        self.compiled
            .lock()
            .expect("lock")
            .insert(schema.to_string(), v.clone());
        v
    }

    /// Checks `doc` against one schema (a path relative to the schema directory).
    pub fn check(&self, schema: &str, doc: &Value) -> Report {
        let v = self.validator(schema);
        let errors: Vec<SchemaError> = v
            .iter_errors(doc)
            .map(|e| SchemaError {
                instance_path: e.instance_path().to_string(),
                schema_path: e.schema_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        let detail = if errors.is_empty() {
            Vec::new()
        } else {
            v.evaluate(doc)
                .iter_errors()
                .map(|e| SchemaError {
                    instance_path: e.instance_location.to_string(),
                    schema_path: e.schema_location.to_string(),
                    message: e.error.to_string(),
                })
                .collect()
        };
        Report {
            schema: schema.to_string(),
            errors,
            detail,
        }
    }

    /// Checks a tool's request or response against every schema it must match (see
    /// [`Schemas::tool_schemas`]); returns the report of each it fails.
    pub fn check_tool(&self, tool: &str, direction: Direction, doc: &Value) -> Vec<Report> {
        self.tool_schemas(tool, direction, doc)
            .iter()
            .map(|schema| self.check(schema, doc))
            .filter(|r| !r.is_valid())
            .collect()
    }

    /// Panics, printing every error path, unless `doc` is a valid `tool` request/response.
    pub fn assert_tool(&self, what: &str, tool: &str, direction: Direction, doc: &Value) {
        let failed = self.check_tool(tool, direction, doc);
        assert!(
            failed.is_empty(),
            "{what}: {tool} {direction:?} is not valid AdCP {}\n{doc:#}\n{}",
            self.version,
            failed.iter().map(Report::to_string).collect::<String>()
        );
    }

    /// Panics, printing every error path, unless `doc` is valid against `schema`.
    pub fn assert_valid(&self, what: &str, schema: &str, doc: &Value) {
        let r = self.check(schema, doc);
        assert!(
            r.is_valid(),
            "{what} is not valid AdCP {}\n{doc:#}\n{r}",
            self.version
        );
    }
}
