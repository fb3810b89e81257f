//! The C and C++ examples, built with strict warnings (and sanitizers where available)
//! against the freshly built `libsmyrf.so` / `libsmyrf.a`, run and reproduce the Rust API's
//! results bit for bit; the install script, the pkg-config file and the examples' Makefile
//! work as documented.

#![cfg(target_os = "linux")]

mod common;
use common::cbuild::{
    built_libraries, fresh_dir, have, install_shared, output_text, sanitizers_work, strict_command,
    SANITIZE, STATIC_LIBS,
};
use common::{repo_root, same_bits};
use smyrf::{Config, Isa, Plan, TensorView, TensorViewMut};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Deterministic data of the examples (the same expression in C, C++ and Rust).
fn example_value(i: u32, salt: u32) -> f32 {
    let mut x = i
        .wrapping_mul(2_654_435_761)
        .wrapping_add(salt.wrapping_mul(40503));
    x ^= x >> 15;
    (x % 2001) as f32 / 1000.0 - 1.0
}

/// What `basic.c` computes, through the Rust API: out `[B][H][N][D]` then lse `[B][H][N]`.
fn basic_reference(isa: Isa) -> Vec<f32> {
    let (b, h, n, d, padding) = (2, 4, 256, 32, 56);
    let len = b * h * n * d;
    let q: Vec<f32> = (0..len as u32).map(|i| 6.0 * example_value(i, 1)).collect();
    let k: Vec<f32> = (0..len as u32)
        .map(|i| example_value(i, 1) + 0.25 * example_value(i, 2))
        .collect();
    let v: Vec<f32> = (0..len as u32).map(|i| example_value(i, 3)).collect();
    let mask: Vec<u8> = (0..b * n)
        .map(|i| u8::from(!(i / n == 1 && i % n >= n - padding)))
        .collect();
    let plan = Plan::new(
        Config::default()
            .n_hashes(2)
            .q_cluster_size(32)
            .seed(42)
            .num_threads(1)
            .isa(isa),
        d,
    )
    .unwrap();
    let mut out = vec![0.0; len];
    let mut lse = vec![0.0; b * h * n];
    plan.attention_with(
        &TensorView::bhnd(&q, b, h, n, d).unwrap(),
        &TensorView::bhnd(&k, b, h, n, d).unwrap(),
        &TensorView::bhnd(&v, b, h, n, d).unwrap(),
        &mut TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap(),
        smyrf::CallOptions::new().key_mask(&mask).lse(&mut lse),
    )
    .unwrap();
    out.extend(lse);
    out
}

/// What `engine.cpp` computes: one call over all heads of `[B, N, H, D]` tensors.
fn engine_reference(isa: Isa) -> Vec<f32> {
    let (b, n, hq, hkv, d, padding) = (2, 192, 8, 2, 32, 40);
    let data = |len: usize, salt| -> Vec<f32> {
        (0..len as u32).map(|i| example_value(i, salt)).collect()
    };
    let (q, k, v) = (
        data(b * n * hq * d, 4),
        data(b * n * hkv * d, 5),
        data(b * n * hkv * d, 6),
    );
    let mask: Vec<u8> = (0..b * n)
        .map(|i| u8::from(!(i / n == 1 && i % n >= n - padding)))
        .collect();
    let plan = Plan::new(
        Config::default()
            .n_hashes(2)
            .q_cluster_size(32)
            .seed(7)
            .num_threads(1)
            .isa(isa),
        d,
    )
    .unwrap();
    let mut out = vec![0.0; b * n * hq * d];
    plan.attention_with(
        &TensorView::bnhd(&q, b, hq, n, d).unwrap(),
        &TensorView::bnhd(&k, b, hkv, n, d).unwrap(),
        &TensorView::bnhd(&v, b, hkv, n, d).unwrap(),
        &mut TensorViewMut::bnhd(&mut out, b, hq, n, d).unwrap(),
        smyrf::CallOptions::new().key_mask(&mask),
    )
    .unwrap();
    out
}

/// A fresh scratch directory inside the target directory, and a `lib/` in it holding
/// the built library under its SONAME (`libsmyrf.so.0`) plus the `libsmyrf.so` link the
/// linker looks for, like an installed copy.
struct Work {
    dir: PathBuf,
    lib: PathBuf,
    static_lib: PathBuf,
}

fn work(name: &str) -> Work {
    let (so, a) = built_libraries();
    let dir = fresh_dir("c-abi-tests", name);
    let lib = dir.join("lib");
    install_shared(&lib, &so);
    Work {
        dir,
        lib,
        static_lib: a,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Shared,
    Static,
}

/// Compiles one example with strict warnings (plus `extra` flags) against the committed
/// header and the built library.
fn build(work: &Work, source: &str, link: Link, extra: &[&str], name: &str) -> PathBuf {
    let cpp = source.ends_with(".cpp");
    let exe = work.dir.join(name);
    let mut cmd = strict_command(cpp);
    // Bitwise comparison with Rust: no contraction of a*b+c into an FMA.
    cmd.arg("-ffp-contract=off")
        .args(extra)
        .arg(repo_root().join("c_examples").join(source))
        .arg("-o")
        .arg(&exe);
    if cpp {
        cmd.arg("-pthread");
    }
    match link {
        Link::Shared => {
            let mut flag = OsString::from("-L");
            flag.push(&work.lib);
            cmd.arg(flag).arg("-lsmyrf");
        }
        Link::Static => {
            cmd.arg(&work.static_lib).args(STATIC_LIBS.split(' '));
        }
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "building {source} failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs an example with only `work.lib` on the loader path; returns its stdout.
fn run(work: &Work, exe: &Path, data_file: &Path) -> String {
    let output: Output = Command::new(exe)
        .arg(data_file)
        .env("LD_LIBRARY_PATH", &work.lib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        exe.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn read_floats(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// The tier an example reports (`isa: NAME`), so the Rust reference uses the same one.
fn reported_isa(stdout: &str) -> Isa {
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("isa: "))
        .unwrap_or_else(|| panic!("no `isa:` line in\n{stdout}"));
    Isa::from_name(name).unwrap()
}

fn check_basic(work: &Work, exe: &Path) {
    let file = work.dir.join(format!(
        "{}.out",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let stdout = run(work, exe, &file);
    assert!(stdout.contains(&format!("smyrf {}", env!("CARGO_PKG_VERSION"))));
    assert!(
        stdout.contains("bad call: status 2 (invalid argument): smyrf_attention: query heads (3) must be a multiple of key/value heads (4)"),
        "{stdout}"
    );
    let exact = stdout
        .lines()
        .find_map(|l| l.strip_prefix("one cluster vs dense: max |difference| "))
        .unwrap();
    assert!(exact.parse::<f64>().unwrap() < 1e-5, "{stdout}");
    let reference = basic_reference(reported_isa(&stdout));
    assert!(
        same_bits(&read_floats(&file), &reference),
        "{} differs from the Rust API",
        exe.display()
    );
}

fn check_engine(work: &Work, exe: &Path) {
    let file = work.dir.join(format!(
        "{}.out",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let stdout = run(work, exe, &file);
    assert!(
        stdout.contains("refused as expected (status 2): invalid argument: smyrf_plan_create: config.n_hashes: must be at least 1"),
        "{stdout}"
    );
    let reference = engine_reference(reported_isa(&stdout));
    assert!(
        same_bits(&read_floats(&file), &reference),
        "{} differs from the Rust API",
        exe.display()
    );
}

#[test]
fn c_example_matches_the_rust_api_shared_and_static() {
    let work = work("basic");
    let shared = build(&work, "basic.c", Link::Shared, &["-O2"], "basic");
    check_basic(&work, &shared);
    // Only libsmyrf.so.0 is needed at run time (the SONAME, not the link name).
    std::fs::remove_file(work.lib.join("libsmyrf.so")).unwrap();
    check_basic(&work, &shared);
    let fixed = build(&work, "basic.c", Link::Static, &["-O2"], "basic-static");
    check_basic(&work, &fixed);
}

#[test]
fn cpp_example_matches_the_rust_api() {
    let work = work("engine");
    let exe = build(&work, "engine.cpp", Link::Shared, &["-O2"], "engine");
    check_engine(&work, &exe);
}

#[test]
fn examples_are_clean_under_address_and_undefined_sanitizers() {
    let work = work("sanitizers");
    if let Err(reason) = sanitizers_work(&work.dir) {
        common::require::unavailable(
            "asan",
            &format!("-fsanitize=address,undefined does not work here: {reason}"),
        );
        return;
    }
    let flags = SANITIZE;
    let basic = build(&work, "basic.c", Link::Shared, &flags, "basic");
    check_basic(&work, &basic);
    let fixed = build(&work, "basic.c", Link::Static, &flags, "basic-static");
    check_basic(&work, &fixed);
    let engine = build(&work, "engine.cpp", Link::Shared, &flags, "engine");
    check_engine(&work, &engine);
}

fn sh(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The documented install command, the pkg-config file, and the Makefile (both its
/// default build against cargo's output and its `pkgconfig` build against the install).
#[test]
fn install_script_pkg_config_and_makefile() {
    for tool in ["make", "pkg-config", "sh"] {
        if !have(tool) {
            common::require::unavailable("install", &format!("`{tool}` is not installed"));
            return;
        }
    }
    let work = work("install");
    let (so, a) = built_libraries();
    // What cargo leaves in target/release, for LIBDIR.
    let cargo_out = work.dir.join("cargo-out");
    std::fs::create_dir_all(&cargo_out).unwrap();
    std::os::unix::fs::symlink(&so, cargo_out.join("libsmyrf.so")).unwrap();
    std::os::unix::fs::symlink(&a, cargo_out.join("libsmyrf.a")).unwrap();

    let prefix = work.dir.join("prefix");
    sh(Command::new("sh")
        .arg(repo_root().join("scripts/install.sh"))
        .arg(&prefix)
        .env("LIBDIR", &cargo_out));
    let version = env!("CARGO_PKG_VERSION");
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let lib = prefix.join("lib");
    assert!(lib.join(format!("libsmyrf.so.{version}")).is_file());
    assert_eq!(
        std::fs::read_link(lib.join(format!("libsmyrf.so.{major}"))).unwrap(),
        Path::new(&format!("libsmyrf.so.{version}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libsmyrf.so")).unwrap(),
        Path::new(&format!("libsmyrf.so.{major}"))
    );
    assert!(lib.join("libsmyrf.a").is_file());
    assert_eq!(
        std::fs::read(prefix.join("include/smyrf.h")).unwrap(),
        std::fs::read(repo_root().join("include/smyrf.h")).unwrap()
    );

    let pc_path = lib.join("pkgconfig");
    let modversion = sh(Command::new("pkg-config")
        .args(["--modversion", "smyrf"])
        .env("PKG_CONFIG_PATH", &pc_path));
    assert_eq!(modversion.trim(), version);
    let static_libs = sh(Command::new("pkg-config")
        .args(["--static", "--libs", "smyrf"])
        .env("PKG_CONFIG_PATH", &pc_path));
    assert!(static_libs.contains(STATIC_LIBS), "{static_libs}");

    let examples = repo_root().join("c_examples");
    let build_dir = work.dir.join("make-build");
    let mut libdir = OsString::from("LIBDIR=");
    libdir.push(&cargo_out);
    let mut out = OsString::from("OUT=");
    out.push(&build_dir);
    let ran = sh(Command::new("make")
        .arg("-C")
        .arg(&examples)
        .arg("run")
        .arg(&libdir)
        .arg(&out)
        .env_remove("MAKEFLAGS"));
    assert_eq!(ran.matches("isa: ").count(), 3, "{ran}");

    sh(Command::new("make")
        .arg("-C")
        .arg(&examples)
        .arg("pkgconfig")
        .arg(&out)
        .env("PKG_CONFIG_PATH", &pc_path)
        .env_remove("MAKEFLAGS"));
    for program in ["basic", "engine"] {
        let exe = build_dir.join("pkgconfig").join(program);
        // No LD_LIBRARY_PATH: the rpath from pkg-config's libdir finds the install.
        let ran = sh(Command::new(&exe).env_remove("LD_LIBRARY_PATH"));
        assert!(ran.contains("isa: "), "{ran}");
    }
}
