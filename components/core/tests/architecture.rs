//! The core's layering rule, checked on its own sources: a module refers only to its own
//! layer or lower ones, and no two modules refer to each other, directly or round a circle.
//!
//! Layers, lowest first: `foundation` → `model` → `auth` → `schedule` → `config` →
//! `records` → `seller` → `lifecycle` → the entry points `api`, `intake`, `sweep`. Among the
//! entry points only `api` → `sweep` is allowed (the HTTP sweep route). `testing` holds
//! test fixtures and may be used from anywhere.
//!
//! References are read from the text with comments and string literals removed: `use`
//! lines (with `{…}` groups), inline paths such as `crate::sweep::tick(…)` (inside macros
//! too) and `super::` paths resolved against the file's module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 11] = [
    "foundation",
    "model",
    "auth",
    "schedule",
    "config",
    "records",
    "seller",
    "lifecycle",
    "api",
    "intake",
    "sweep",
];
/// Index in [`LAYERS`] from which modules are entry points (one rank).
const ENTRY: usize = 8;
const ALLOWED_BETWEEN_ENTRIES: [(&str, &str); 1] = [("api", "sweep")];

/// One reference from a source file to a module of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    file: String,
    line: usize,
    /// The module path referred to (`["sweep", "tick"]`), as far as modules exist.
    target: Vec<String>,
    text: String,
}

/// The module path of a source file relative to `src/`.
fn module_of(file: &str) -> Vec<String> {
    let no_ext = file.trim_end_matches(".rs");
    let mut segs: Vec<String> = no_ext.split('/').map(str::to_string).collect();
    if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
        segs.pop();
    }
    segs
}

/// The source with comments, string and char literals blanked out (newlines kept, so line
/// numbers hold).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' || rest.starts_with(b"b\"") {
            let mut j = if rest[0] == b'"' { 1 } else { 2 };
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let len = (j + 1).min(rest.len());
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'\'' && char_literal_len(rest).is_some() {
            let len = char_literal_len(rest).unwrap_or(1);
            blank(&mut out, &rest[..len]);
            i += len;
        } else {
            let c = src[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"` …: the literal's length.
fn raw_string_len(s: &[u8]) -> Option<usize> {
    let start = if s.starts_with(b"br") {
        2
    } else if s.starts_with(b"r") {
        1
    } else {
        return None;
    };
    let hashes = s[start..].iter().take_while(|&&c| c == b'#').count();
    if s.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = start + hashes + 1;
    s[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

/// `'a'`, `'\n'`, `'\u{1F600}'` (not a lifetime such as `'a`).
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let end = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(end + 3);
    }
    let text = std::str::from_utf8(&s[1..s.len().min(6)])
        .ok()
        .or_else(|| {
            // A multi-byte char may end past the slice end: read it alone.
            std::str::from_utf8(&s[1..]).ok()
        })?;
    let c = text.chars().next()?;
    (s.get(1 + c.len_utf8()) == Some(&b'\'')).then_some(c.len_utf8() + 2)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a path after `at` (`a::b::{c, d::e}` …) and returns every full path it names.
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let s = &code[at..];
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        let ident: String = s[i..].chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            break;
        }
        i += ident.len();
        segs.push(ident);
        let rest = &s[i..];
        let trimmed = rest.trim_start();
        if !trimmed.starts_with("::") {
            break;
        }
        i += rest.len() - trimmed.len() + 2;
        let after = &s[i..];
        let spaces = after.len() - after.trim_start().len();
        i += spaces;
        if s[i..].starts_with('{') {
            let group = group_body(&s[i..]);
            return split_group(group)
                .into_iter()
                .flat_map(|item| {
                    paths_at(item, 0).into_iter().map({
                        let segs = segs.clone();
                        move |p| segs.iter().cloned().chain(p).collect()
                    })
                })
                .collect();
        }
    }
    vec![segs]
}

/// The text inside the `{…}` group `s` starts with.
fn group_body(s: &str) -> &str {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &s[1..i];
                }
            }
            _ => {}
        }
    }
    &s[1..]
}

fn split_group(body: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(body[start..].trim());
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Every reference to a crate module in one file.
fn references(file: &str, src: &str, modules: &BTreeSet<Vec<String>>) -> Vec<Reference> {
    let code = code_only(src);
    let own = module_of(file);
    let mut out = Vec::new();
    for (start, _) in code
        .match_indices("crate")
        .chain(code.match_indices("super"))
    {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        for path in paths_at(&code, start) {
            let mut base: Vec<String> = Vec::new();
            let mut rest = path.as_slice();
            if rest.first().is_some_and(|s| s == "crate") {
                rest = &rest[1..];
            } else {
                base = own.clone();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            if rest.is_empty() && path.len() == 1 {
                continue; // a bare `crate`/`super` word
            }
            let mut target = base;
            for seg in rest {
                let mut next = target.clone();
                next.push(seg.clone());
                if !modules.contains(&next) {
                    break;
                }
                target = next;
            }
            if target.is_empty() {
                continue; // the crate root
            }
            out.push(Reference {
                file: file.to_string(),
                line,
                target,
                text: path.join("::"),
            });
        }
    }
    out
}

fn layer(module: &[String]) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| module.first().is_some_and(|m| m == l))
}

/// Upward references, as messages naming the file, the line and the two layers.
fn violations(sources: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(f, _)| module_of(f)).collect();
    let mut out = Vec::new();
    for (file, src) in sources {
        let from_mod = module_of(file);
        let Some(from) = layer(&from_mod) else {
            continue; // lib.rs, testing/
        };
        for r in references(file, src, &modules) {
            if r.target.first().is_some_and(|m| m == "testing") {
                continue;
            }
            let Some(to) = layer(&r.target) else {
                continue;
            };
            let (a, b) = (LAYERS[from], LAYERS[to]);
            let upward = if from >= ENTRY && to >= ENTRY {
                a != b && !ALLOWED_BETWEEN_ENTRIES.contains(&(a, b))
            } else {
                to > from
            };
            if upward {
                out.push(format!(
                    "src/{}:{}: `{}` is in layer `{a}` and refers to layer `{b}` (`{}`); \
                     move the shared part down to `{a}` or below",
                    r.file, r.line, a, r.text
                ));
            }
        }
    }
    out
}

/// Circles of file-level references (each circle once, as its files in order).
fn cycles(sources: &[(String, String)]) -> Vec<Vec<String>> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(f, _)| module_of(f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (file, src) in sources {
        let from = module_of(file);
        for r in references(file, src, &modules) {
            // A module using itself or its parent's items (`use super::*` in tests) makes no
            // circle: a parent only declares its children.
            if !from.starts_with(&r.target[..]) {
                edges.entry(from.clone()).or_default().insert(r.target);
            }
        }
    }
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        found: Vec<Vec<String>>,
    }
    fn visit(s: &mut State<'_>, v: &Vec<String>) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let next: Vec<Vec<String>> = s
            .edges
            .get(v)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w.join("::"));
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for m in &modules {
        if !state.index.contains_key(m) {
            visit(&mut state, m);
        }
    }
    state.found
}

/// The crate's own sources, as (path under `src/`, text).
fn crate_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("src is readable")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).expect("under src").to_string_lossy();
                let text = std::fs::read_to_string(&p).expect("source is UTF-8");
                out.push((rel.replace('\\', "/"), text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn every_module_refers_only_to_its_own_layer_or_lower_ones() {
    let sources = crate_sources();
    assert!(sources.len() > 40, "read {} files", sources.len());
    let found = violations(&sources);
    assert!(found.is_empty(), "upward references:\n{}", found.join("\n"));
}

#[test]
fn no_two_modules_of_the_core_refer_to_each_other() {
    let found = cycles(&crate_sources());
    assert!(found.is_empty(), "import circles: {found:?}");
}

/// A small crate in the test's own memory: the real layer names, planted references.
fn fixture(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = LAYERS
        .iter()
        .map(|l| (format!("{l}/mod.rs"), String::new()))
        .collect();
    all.extend(files.iter().map(|(p, s)| (p.to_string(), s.to_string())));
    all
}

#[test]
fn a_planted_upward_use_is_caught_with_file_line_and_layers() {
    let found = violations(&fixture(&[
        ("sweep/tick.rs", "pub fn tick() {}\n"),
        (
            "model/task.rs",
            "use serde::Serialize;\n\nuse crate::{foundation::error, sweep::tick::tick};\n",
        ),
    ]));
    assert_eq!(
        found,
        [
            "src/model/task.rs:3: `model` is in layer `model` and refers to layer `sweep` \
          (`crate::sweep::tick::tick`); move the shared part down to `model` or below"
        ]
    );
}

#[test]
fn a_planted_inline_path_and_a_climbing_super_are_caught() {
    let found = violations(&fixture(&[
        ("lifecycle/dispatch.rs", "pub fn dispatch() {}\n"),
        (
            "records/journal.rs",
            "// crate::sweep in a comment is no reference\n\
             fn f() { let s = \"crate::api\"; crate::lifecycle::dispatch::dispatch(); }\n\
             fn g() { assert!(super::super::intake::x()); }\n",
        ),
    ]));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("src/records/journal.rs:2: `records`"));
    assert!(found[0].contains("layer `lifecycle`"));
    assert!(found[1].starts_with("src/records/journal.rs:3:"));
    assert!(found[1].contains("layer `intake`"));
}

#[test]
fn entry_points_call_only_the_sweep_and_lower_layers() {
    let found = violations(&fixture(&[
        ("api/routes.rs", "use crate::sweep::tick;\n"),
        ("intake/auth.rs", "use crate::api::routes;\n"),
        ("sweep/tick.rs", "use crate::api::routes;\n"),
    ]));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found.iter().any(|f| f.starts_with("src/intake/auth.rs:1:")));
    assert!(found.iter().any(|f| f.starts_with("src/sweep/tick.rs:1:")));
}

#[test]
fn a_planted_circle_is_found() {
    let found = cycles(&fixture(&[
        ("lifecycle/a.rs", "use super::b::x;\n"),
        ("lifecycle/b.rs", "use crate::lifecycle::a::y;\n"),
        ("lifecycle/c.rs", "use super::a::z;\n"),
    ]));
    assert_eq!(found, [vec!["lifecycle::a", "lifecycle::b"]]);
}
