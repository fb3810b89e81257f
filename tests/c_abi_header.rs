//! The C ABI's header and library file (design §2, §3): the committed header matches the
//! one cbindgen generates and documents every item, its structs have the Rust layout in C
//! and C++, the version macros agree with the package, the static link flags are named the
//! same everywhere, and the shared library carries its SONAME.

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
    // 6 macros, 4 enums with 16 values, 7 types with 41 fields, 18 functions.
    assert!(
        declarations >= 92,
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
        "SMYRF_DTYPE_F32 = 0,",
        "SMYRF_DTYPE_F16 = 1,",
        "SMYRF_DTYPE_BF16 = 2,",
        "uint32_t isa;",
        "size_t struct_size;",
        "uint32_t dtype;",
        "smyrf_parallel_for_fn parallel_for;",
        "static inline smyrf_call_args smyrf_call_args_default(void) {",
        "#ifndef SMYRF_H",
        "extern \"C\" {",
    ] {
        assert!(lines.contains(&name), "header lacks `{name}`");
    }
}

/// Every versioned struct's size and field offsets, and the `SMYRF_*_MIN_SIZE` macros, as
/// the Rust side defines them: (struct, field or "" for the size, value).
#[cfg(unix)]
fn rust_layout() -> Vec<(&'static str, &'static str, usize)> {
    macro_rules! layout {
        ($($t:ident { $($f:ident),* })*) => {
            vec![$(
                (stringify!($t), "", std::mem::size_of::<$t>()),
                $((stringify!($t), stringify!($f), std::mem::offset_of!($t, $f)),)*
            )*]
        };
    }
    let mut layout = layout! {
        smyrf_config {
            struct_size, n_hashes, q_cluster_size, k_cluster_size, scale, seed, num_threads,
            isa, n_sinks, sink_selection, window, n_samples, sample_group, bf16_exact, n_selected,
            select_dims
        }
        smyrf_tensor {
            struct_size, data, dtype, batch, heads, seq_len, dim, batch_stride, head_stride,
            seq_stride
        }
        smyrf_tensor_mut {
            struct_size, data, dtype, batch, heads, seq_len, dim, batch_stride, head_stride,
            seq_stride
        }
        smyrf_call_args {
            struct_size, key_mask, key_lengths, head_sinks, lse_out, parallel_for,
            parallel_context, parallel_workers
        }
    };
    layout.extend([
        ("SMYRF_CONFIG_MIN_SIZE", "", SMYRF_CONFIG_MIN_SIZE),
        ("SMYRF_TENSOR_MIN_SIZE", "", SMYRF_TENSOR_MIN_SIZE),
        ("SMYRF_CALL_ARGS_MIN_SIZE", "", SMYRF_CALL_ARGS_MIN_SIZE),
    ]);
    layout
}

/// A C (C++ with `cpp`) compiler compiles a program against the committed header that
/// prints the sizes, offsets and macros of [`rust_layout`] as it sees them; they must agree,
/// or a caller's `sizeof` would be a `struct_size` the library reads differently.
#[cfg(unix)]
fn check_layout(cpp: bool) {
    let layout = rust_layout();
    let mut source = String::from("#include <smyrf.h>\n#include <stddef.h>\n#include <stdio.h>\n");
    source.push_str("int main(void) {\n");
    for &(t, f, _) in &layout {
        let value = match (f, t.starts_with("SMYRF_")) {
            (_, true) => format!("(size_t)({t})"),
            ("", false) => format!("sizeof({t})"),
            _ => format!("offsetof({t}, {f})"),
        };
        source.push_str(&format!("    printf(\"{t} {f} %zu\\n\", {value});\n"));
    }
    source.push_str("    return 0;\n}\n");
    let dir = common::cbuild::fresh_dir("c-abi-tests", if cpp { "layout-cpp" } else { "layout-c" });
    let file = dir.join(if cpp { "layout.cpp" } else { "layout.c" });
    std::fs::write(&file, source).unwrap();
    let exe = dir.join("layout");
    let mut cmd = common::cbuild::strict_command(cpp);
    cmd.arg(&file).arg("-o").arg(&exe);
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?}\n{}",
        common::cbuild::output_text(&output)
    );
    let output = std::process::Command::new(&exe).output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let want: Vec<String> = layout
        .iter()
        .map(|(t, f, v)| format!("{t} {f} {v}"))
        .collect();
    let got: Vec<&str> = printed.lines().collect();
    assert_eq!(
        got,
        want,
        "the {} layout differs from Rust's",
        if cpp { "C++" } else { "C" }
    );
}

#[cfg(unix)]
#[test]
fn structs_have_the_rust_layout_in_c_and_cpp() {
    check_layout(false);
    check_layout(true);
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
