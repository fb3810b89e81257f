//! The C ABI's header and library file (design §2, §3): the committed header matches the
//! one cbindgen generates and documents every item, the version macros agree with the
//! package, the static link flags are named the same everywhere, and the shared library
//! carries its SONAME.

mod common;
use common::cbuild::STATIC_LIBS;
use common::ffi::c_str;
use common::repo_root;
use smyrf::internals::ffi::*;

#[test]
fn committed_header_matches_generated_header() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/smyrf.h")).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("include/smyrf.h"))
        .unwrap_or_else(|e| format!("(cannot read include/smyrf.h: {e})"));
    assert!(
        generated == committed,
        "include/smyrf.h is out of date with src/ffi.rs; regenerate it with\n\n    \
         SMYRF_UPDATE_HEADER=1 cargo build --release\n\nand commit the result"
    );
}

/// The declarations of a cbindgen header (macros, types, fields, enum values, functions)
/// that do not come right after a doc comment, and how many declarations there are.
fn undocumented_declarations(header: &str) -> (usize, Vec<String>) {
    let lines: Vec<&str> = header.lines().map(str::trim).collect();
    let mut undocumented = Vec::new();
    let mut in_comment = false;
    let mut continues_declaration = false;
    let mut in_body = false;
    let mut inline_declaration = false;
    let mut declarations = 0;
    for (i, line) in lines.iter().enumerate() {
        if in_comment || line.starts_with("/*") {
            in_comment = !line.ends_with("*/");
            continue;
        }
        // The body of an inline initialiser: its first line is the declaration.
        if in_body {
            in_body = *line != "}";
            continue;
        }

        let structural = line.is_empty()
            || line.starts_with("#if")
            || line.starts_with("#endif")
            || line.starts_with("#include")
            || line.starts_with("#define SMYRF_H")
            || line.starts_with('}')
            || line.starts_with('{')
            || line.starts_with(':')
            || line.starts_with("extern \"C\"")
            || (line.starts_with("typedef uint32_t") && lines[i - 1] == "#ifndef __cplusplus");
        if !structural && !continues_declaration {
            declarations += 1;
            if !lines[i - 1].ends_with("*/") {
                undocumented.push(line.to_string());
            }
        }
        // The parameter lines of a multi-line prototype belong to its first line.
        continues_declaration = line.ends_with(',') && line.contains('(')
            || continues_declaration && !line.ends_with(';') && !line.ends_with('{');
        inline_declaration |= line.starts_with("static inline");
        if inline_declaration && line.ends_with('{') {
            (in_body, inline_declaration) = (true, false);
        }
    }
    (declarations, undocumented)
}

#[test]
fn header_documents_every_item() {
    let header = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    let (declarations, undocumented) = undocumented_declarations(&header);
    // 3 macros, 2 enums with 11 values, 4 types with 23 fields, 12 functions.
    assert!(
        declarations >= 55,
        "parsed only {declarations} declarations"
    );
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
    // The check notices a missing comment.
    let stripped = header.replacen("     * Hash rounds R, at least 1 (default 2).\n", "", 1);
    let stripped = stripped.replacen(
        "    /**\n     */\n    uint32_t n_hashes;",
        "    uint32_t n_hashes;",
        1,
    );
    assert_eq!(
        undocumented_declarations(&stripped).1,
        vec!["uint32_t n_hashes;".to_string()]
    );
    let lines: Vec<&str> = header.lines().map(str::trim).collect();
    for name in [
        "typedef struct smyrf_plan smyrf_plan;",
        "SMYRF_OK = 0,",
        "SMYRF_ERROR_PANIC = 5,",
        "SMYRF_ISA_AUTO = 0,",
        "SMYRF_ISA_NEON = 4,",
        "uint32_t isa;",
        "#ifndef SMYRF_H",
        "extern \"C\" {",
    ] {
        assert!(lines.contains(&name), "header lacks `{name}`");
    }
}

#[test]
fn version_string_and_macros_agree_with_the_package() {
    assert_eq!(c_str(smyrf_version()), env!("CARGO_PKG_VERSION"));
    let header = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    for (macro_name, value) in [
        ("SMYRF_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("SMYRF_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("SMYRF_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define {macro_name} {value}");
        assert!(header.lines().any(|l| l == line), "header lacks `{line}`");
    }
}

#[test]
fn static_link_flags_are_documented_consistently() {
    for file in ["c_examples/Makefile", "scripts/install.sh", "README.md"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(
            text.contains(STATIC_LIBS),
            "{file} does not name `{STATIC_LIBS}`"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn library_carries_its_soname() {
    let (so, _) = common::cbuild::built_libraries();
    let output = match std::process::Command::new("readelf")
        .arg("-d")
        .arg(&so)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            // The examples still prove it: they run with only the SONAME file present.
            common::require::unavailable("readelf", &e.to_string());
            return;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let soname = format!("Library soname: [{}]", common::cbuild::soname());
    assert!(text.contains(&soname), "{text}");
}
