//! `c_examples/stress.c` (threads sharing plans, thousands of good and bad calls with varied
//! shapes, strides, masks, key lengths, head sinks, struct sizes and an engine's
//! parallel-for) built with strict warnings and run against the freshly built
//! `libsmyrf.so`: once plain, once under AddressSanitizer and UndefinedBehaviorSanitizer
//! (not run, with the reason, where the sanitizer runtimes do not work, unless
//! `SMYRF_REQUIRE` names `asan`: then that fails).
//!
//! Only the C side is instrumented in that run (plus the sanitizer's interceptors of memcpy
//! and friends, which the library's row copies go through). `.ci/run` also builds the
//! library itself with `-Zsanitizer=address` and points `SMYRF_ASAN_LIBDIR` at it; then the
//! sanitized program runs against that instrumented library too, so an out-of-bounds access
//! inside the Rust kernels is reported as well (TESTING.md, "Reliability").

#![cfg(target_os = "linux")]

mod common;

use common::cbuild::{
    built_shared_library, fresh_dir, install_shared, output_text, sanitizers_work, strict_command,
    SANITIZE,
};
use common::repo_root;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Iterations per thread (4 threads): about 25,000 calls plain, 8,000 under the sanitizers.
const PLAIN_ITERATIONS: &str = "3000";
const SANITIZED_ITERATIONS: &str = "1000";

/// A fresh directory holding `library` under its SONAME and link name, as installed.
fn lib_dir(name: &str, library: &Path) -> PathBuf {
    let dir = fresh_dir("c-stress", name);
    install_shared(&dir, library);
    dir
}

/// Compiles `source` with strict warnings and `extra` flags against `lib`; Err with the
/// compiler's output when that fails.
fn build(source: &Path, lib: &Path, extra: &[&str], exe: &Path) -> Result<(), String> {
    let mut cmd = strict_command(false);
    let mut lib_flag = OsString::from("-L");
    lib_flag.push(lib);
    cmd.arg("-pthread")
        .args(extra)
        .arg(source)
        .arg("-o")
        .arg(exe)
        .arg(lib_flag)
        .arg("-lsmyrf");
    let output = cmd.output().map_err(|e| e.to_string())?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{:?} {:?}\n{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// Runs the stress program; returns (success, stdout and stderr).
fn run(exe: &Path, lib: &Path, iterations: &str) -> (bool, String) {
    let output = Command::new(exe)
        .arg(iterations)
        .env("LD_LIBRARY_PATH", lib)
        // Leak checking on where LeakSanitizer works; any report fails the run.
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=23",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap();
    (output.status.success(), output_text(&output))
}

fn check(exe: &Path, lib: &Path, iterations: &str) {
    let (ok, text) = run(exe, lib, iterations);
    assert!(
        ok && text.contains("stress: ok"),
        "{}:\n{text}",
        exe.display()
    );
    assert!(text.contains(" 0 failed checks"), "{text}");
}

#[test]
fn stress_program_plain_and_under_sanitizers() {
    let source = repo_root().join("c_examples/stress.c");
    let lib = lib_dir("plain", &built_shared_library());
    let plain = lib.join("stress");
    build(&source, &lib, &["-O2"], &plain).unwrap();
    check(&plain, &lib, PLAIN_ITERATIONS);

    if let Err(reason) = sanitizers_work(&lib) {
        common::require::unavailable(
            "asan",
            &format!("-fsanitize=address,undefined does not work here: {reason}"),
        );
        return;
    }
    let sanitized = lib.join("stress-sanitized");
    build(&source, &lib, &SANITIZE, &sanitized).unwrap();
    check(&sanitized, &lib, SANITIZED_ITERATIONS);

    // The library itself instrumented, when CI built it (see the module comment).
    match std::env::var_os("SMYRF_ASAN_LIBDIR") {
        Some(dir) => {
            let asan_lib = lib_dir("asan", &Path::new(&dir).join("libsmyrf.so"));
            let exe = asan_lib.join("stress-sanitized");
            build(&source, &asan_lib, &SANITIZE, &exe).unwrap();
            check(&exe, &asan_lib, SANITIZED_ITERATIONS);
            println!(
                "ran against the instrumented library in {}",
                dir.to_string_lossy()
            );
        }
        None => common::require::unavailable(
            "asan-lib",
            "SMYRF_ASAN_LIBDIR not set: the library itself was not instrumented",
        ),
    }
}

#[test]
fn the_sanitized_run_would_catch_a_broken_promise() {
    // The harness's own check: a program that declares a tensor larger than its buffer is
    // reported by AddressSanitizer (through the memcpy interceptor when only the C side is
    // instrumented), so a clean stress run means something.
    let lib = lib_dir("canary", &built_shared_library());
    if let Err(reason) = sanitizers_work(&lib) {
        common::require::unavailable(
            "asan",
            &format!("-fsanitize=address does not work here: {reason}"),
        );
        return;
    }
    let source = lib.join("overflow.c");
    std::fs::write(
        &source,
        r#"#include <smyrf.h>
#include <stdlib.h>
int main(void) {
    /* Declares 8 rows of 4 floats (32) but allocates 31. */
    float *q = calloc(31, sizeof *q), *k = calloc(32, sizeof *k);
    float *v = calloc(32, sizeof *v), *o = calloc(32, sizeof *o);
    smyrf_tensor tq = smyrf_tensor_bhnd(q, SMYRF_DTYPE_F32, 1, 1, 8, 4);
    smyrf_tensor tk = smyrf_tensor_bhnd(k, SMYRF_DTYPE_F32, 1, 1, 8, 4);
    smyrf_tensor tv = smyrf_tensor_bhnd(v, SMYRF_DTYPE_F32, 1, 1, 8, 4);
    smyrf_tensor_mut to = smyrf_tensor_mut_bhnd(o, SMYRF_DTYPE_F32, 1, 1, 8, 4);
    smyrf_status s = smyrf_dense_attention(&tq, &tk, &tv, 0.0f, &to, NULL);
    free(q);
    free(k);
    free(v);
    free(o);
    return (int)s;
}
"#,
    )
    .unwrap();
    let exe = lib.join("overflow");
    build(&source, &lib, &SANITIZE, &exe).unwrap();
    let (ok, text) = run(&exe, &lib, "0");
    assert!(!ok && text.contains("heap-buffer-overflow"), "{text}");
}
