//! The source layout's one rule (docs/design.md §5): a module never imports from a layer
//! above it, so the module graph has no cycles. Every `crate::` path in `src/` is checked
//! against the layer order below, reading the sources as text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom layer up; a module may use those before it.
const LAYERS: &[&[&str]] = &[
    &["isa"],
    &["error"],
    &["view", "config"],
    &["call"],
    &["simd"],
    &["runtime"],
    &["alsh", "attention", "convert", "sort"],
    &["dense"],
    &["plan"],
    &["ffi"],
    &["internals"],
    &["lib"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`lib` for `src/lib.rs`, `None` for
/// binaries under `src/bin/`, which see only the public API).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src/");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "bin" => None,
        "lib.rs" => Some("lib".into()),
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// Items re-exported at the crate root, mapped to the module that defines them, read from
/// the `pub use` lines of `src/lib.rs`.
fn root_items(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or_default().to_string();
        let names = rest.split_once("::").map_or("", |(_, names)| names);
        for name in names
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
        {
            let name = name.trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            if !name.is_empty() {
                items.insert(name.to_string(), module.clone());
            }
        }
    }
    items
}

/// The code of a file outside its `#[cfg(test)]` module (unit tests may reach anything).
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let roots = root_items(&lib);
    assert!(
        roots.contains_key("Plan"),
        "root re-exports not found in src/lib.rs"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let layer = layer_of(&module)
            .unwrap_or_else(|| panic!("{}: module `{module}` has no layer", file.display()));
        let text = std::fs::read_to_string(file).expect("source file");
        for (at, _) in non_test_code(&text).match_indices("crate::") {
            let path = &text[at + "crate::".len()..];
            let name: String = path
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let target = match layer_of(&name) {
                Some(_) => name.clone(),
                None => match roots.get(&name) {
                    Some(origin) => origin.clone(),
                    None => continue, // a macro or a name the compiler checks anyway
                },
            };
            checked += 1;
            let target_layer = layer_of(&target).expect("known module");
            if target != module && target_layer >= layer {
                let line = text[..at].lines().count();
                violations.push(format!(
                    "{}:{line}: `{module}` uses `crate::{name}` (module `{target}`)",
                    file.display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} crate paths found: is the parser broken?"
    );
    assert!(
        violations.is_empty(),
        "imports from a layer above:\n{}",
        violations.join("\n")
    );
}
