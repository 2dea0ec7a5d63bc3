//! Where the AdCP spec material the tests read lives: 3.1.19 in the spec checkout beside the
//! repository, the current release in the installed `adcp` Python package (found at test
//! time, never copied into the repository).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The release whose vectors the installed package ships.
pub const CURRENT: &str = "3.2.4";

/// The installed `adcp` package: `ADCP_PYTHON`, else the venv the test script creates.
pub fn package() -> PathBuf {
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

/// The 3.1.19 spec checkout (schemas and vectors) beside the repository.
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/adcp")
}

/// Both vector sets, oldest first, named by release: a test that runs a vector file runs
/// it from each set that ships it.
pub fn vector_sets() -> [(&'static str, PathBuf); 2] {
    [
        ("3.1.19", shared().join("test-vectors")),
        (
            CURRENT,
            package().join(format!("_compliance/{CURRENT}/test-vectors")),
        ),
    ]
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
