//! The C and C++ examples, built with strict warnings (and sanitizers where available)
//! against the freshly built `libsmyrf.so` / `libsmyrf.a`, run and reproduce the Rust API's
//! results bit for bit; the install script, the pkg-config file, the CMake package and the
//! examples' Makefile and CMakeLists.txt work as documented.

#![cfg(target_os = "linux")]

mod common;
use common::cbuild::{
    built_libraries, fresh_dir, have, install_shared, output_text, sanitizers_work, soname,
    strict_command, SANITIZE, STATIC_LIBS,
};
use common::ffi::c_str;
use common::{repo_root, same_bits};
use half::f16;
use smyrf::internals::ffi::smyrf_status_message;
use smyrf::{CallOptions, Config, Isa, Plan, TensorView, TensorViewMut};
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

/// What `basic.c` computes, through the Rust API: out `[B][H][N][D]` then lse `[B][H][N]`
/// of the masked call, then the same two of the call with key lengths and head sinks.
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
    let (qv, kv, vv) = (
        TensorView::bhnd(&q, b, h, n, d).unwrap(),
        TensorView::bhnd(&k, b, h, n, d).unwrap(),
        TensorView::bhnd(&v, b, h, n, d).unwrap(),
    );
    let mut result = Vec::new();
    let key_lengths = [n as u32, (n - padding - 16) as u32];
    let head_sinks = [0.0, 1.5, -2.0, f32::NEG_INFINITY];
    for with_lengths_and_sinks in [false, true] {
        let mut out = vec![0.0; len];
        let mut lse = vec![0.0; b * h * n];
        let options = match with_lengths_and_sinks {
            false => CallOptions::new().key_mask(&mask),
            true => CallOptions::new()
                .key_lengths(&key_lengths)
                .head_sinks(&head_sinks),
        };
        plan.attention_with(
            &qv,
            &kv,
            &vv,
            &mut TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap(),
            options.lse(&mut lse),
        )
        .unwrap();
        result.extend(out);
        result.extend(lse);
    }
    result
}

/// What `engine.cpp` computes: one call over all heads of `[B, N, H, D]` tensors, which its
/// per-head calls and its call on the engine's thread pool both give; then the call over
/// K and V rounded to f16 (nearest even, as the example's converter rounds), with key
/// lengths in place of the mask.
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
    let qv = TensorView::bnhd(&q, b, hq, n, d).unwrap();
    let mut out = vec![0.0; b * n * hq * d];
    plan.attention_with(
        &qv,
        &TensorView::bnhd(&k, b, hkv, n, d).unwrap(),
        &TensorView::bnhd(&v, b, hkv, n, d).unwrap(),
        &mut TensorViewMut::bnhd(&mut out, b, hq, n, d).unwrap(),
        CallOptions::new().key_mask(&mask),
    )
    .unwrap();
    let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let mut cached = vec![0.0; b * n * hq * d];
    plan.attention_with(
        &qv,
        &TensorView::bnhd(&k16, b, hkv, n, d).unwrap(),
        &TensorView::bnhd(&v16, b, hkv, n, d).unwrap(),
        &mut TensorViewMut::bnhd(&mut cached, b, hq, n, d).unwrap(),
        CallOptions::new().key_lengths(&[n as u32, (n - padding) as u32]),
    )
    .unwrap();
    [out.clone(), out, cached].concat()
}

/// A fresh scratch directory inside the target directory, and a `lib/` in it holding
/// the built library under its SONAME plus the `libsmyrf.so` link the linker looks for,
/// like an installed copy.
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

/// Asserts that an example's output file holds the reference's bits, naming the first part
/// (of the named lengths, in order) that differs.
fn compare_parts(exe: &Path, got: &[f32], want: &[f32], parts: &[(&str, usize)]) {
    assert_eq!(want.len(), parts.iter().map(|p| p.1).sum::<usize>());
    assert_eq!(
        got.len(),
        want.len(),
        "{}: output file length",
        exe.display()
    );
    let mut at = 0;
    for &(name, len) in parts {
        assert!(
            same_bits(&got[at..at + len], &want[at..at + len]),
            "{}: {name} differs from the Rust API",
            exe.display()
        );
        at += len;
    }
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
    let invalid = c_str(smyrf_status_message(2));
    assert!(
        stdout.contains(&format!("bad call: status 2 ({invalid}): smyrf_attention: query heads (3) must be a multiple of key/value heads (4)")),
        "{stdout}"
    );
    let exact = stdout
        .lines()
        .find_map(|l| l.strip_prefix("one cluster vs dense: max |difference| "))
        .unwrap();
    assert!(exact.parse::<f64>().unwrap() < 1e-5, "{stdout}");
    let reference = basic_reference(reported_isa(&stdout));
    let (out, lse) = (2 * 4 * 256 * 32, 2 * 4 * 256);
    compare_parts(
        exe,
        &read_floats(&file),
        &reference,
        &[
            ("masked out", out),
            ("masked lse", lse),
            ("key lengths + head sinks out", out),
            ("key lengths + head sinks lse", lse),
        ],
    );
}

fn check_engine(work: &Work, exe: &Path) {
    let file = work.dir.join(format!(
        "{}.out",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let stdout = run(work, exe, &file);
    let invalid = c_str(smyrf_status_message(2));
    assert!(
        stdout.contains(&format!("refused as expected (status 2): {invalid}: smyrf_plan_create: config.n_hashes: must be at least 1")),
        "{stdout}"
    );
    assert!(
        stdout.contains("thread pool (4 at once): same bits as the per-head calls"),
        "{stdout}"
    );
    let reference = engine_reference(reported_isa(&stdout));
    let out = 2 * 192 * 8 * 32;
    compare_parts(
        exe,
        &read_floats(&file),
        &reference,
        &[
            ("per-head calls", out),
            ("thread-pool call", out),
            ("f16 K/V call", out),
        ],
    );
}

/// What `decode.c` computes, through the Rust API: each step's decode output `[Hq][D]`.
fn decode_reference(isa: Isa) -> Vec<f32> {
    let (hq, hkv, d, prompt, steps, capacity) = (4, 2, 32, 1000, 24, 1024);
    let mut k = vec![f16::ZERO; hkv * capacity * d];
    let mut v = k.clone();
    let topic =
        |h: usize, t: usize, x: usize| example_value(((h * capacity + t / 48) * d + x) as u32, 2);
    let write = |k: &mut [f16], v: &mut [f16], t: usize| {
        for h in 0..hkv {
            for x in 0..d {
                let i = (h * capacity + t) * d + x;
                k[i] = f16::from_f32(topic(h, t, x) + 0.25 * example_value(i as u32, 4));
                v[i] = f16::from_f32(example_value(i as u32, 3));
            }
        }
    };
    for t in 0..prompt {
        write(&mut k, &mut v, t);
    }
    let plan = Plan::new(Config::causal(128).isa(isa), d).unwrap();
    let mut index = smyrf::KvIndex::new(&plan, 1, hkv, capacity).unwrap();
    let mut length = prompt;
    index
        .append(
            &TensorView::bhnd(&k, 1, hkv, capacity, d).unwrap(),
            &[length as u32],
        )
        .unwrap();
    let mut outputs = Vec::new();
    for step in 0..steps {
        write(&mut k, &mut v, length);
        length += 1;
        let kv = TensorView::bhnd(&k, 1, hkv, capacity, d).unwrap();
        index.append(&kv, &[length as u32]).unwrap();
        let mut q = vec![0.0f32; hq * d];
        for h in 0..hq {
            let target = (step * 7919 + h * 104729) % (length - 200);
            for x in 0..d {
                let j = ((step * hq + h) * d + x) as u32;
                q[h * d + x] = 3.0 * topic(h / (hq / hkv), target, x) + 0.25 * example_value(j, 1);
            }
        }
        let mut out = vec![0.0f32; hq * d];
        plan.decode(
            &index,
            &TensorView::bhnd(&q, 1, hq, 1, d).unwrap(),
            &kv,
            &TensorView::bhnd(&v, 1, hkv, capacity, d).unwrap(),
            &mut TensorViewMut::bhnd(&mut out, 1, hq, 1, d).unwrap(),
            CallOptions::new(),
        )
        .unwrap();
        outputs.extend(out);
    }
    outputs
}

#[test]
fn c_decode_loop_matches_the_rust_api() {
    let work = work("decode");
    let exe = build(&work, "decode.c", Link::Shared, &["-O2"], "decode");
    let file = work.dir.join("decode.out");
    let stdout = run(&work, &exe, &file);
    assert!(stdout.contains("decoded 24 tokens"), "{stdout}");
    assert!(stdout.contains("append out of order: "), "{stdout}");
    let want = decode_reference(reported_isa(&stdout));
    compare_parts(
        &exe,
        &read_floats(&file),
        &want,
        &[("decode outputs", want.len())],
    );
}

#[test]
fn c_example_matches_the_rust_api_shared_and_static() {
    let work = work("basic");
    let shared = build(&work, "basic.c", Link::Shared, &["-O2"], "basic");
    check_basic(&work, &shared);
    // Only the SONAME file is needed at run time, not the link name.
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

/// The README's C example, as printed there: it compiles with strict warnings, links
/// against the built library and runs.
#[test]
fn readme_c_example_builds_and_runs() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("```c\n").expect("README.md has a C example") + "```c\n".len();
    let len = readme[start..].find("```").expect("the C example ends");
    let work = work("readme");
    let source = work.dir.join("readme.c");
    std::fs::write(&source, &readme[start..start + len]).unwrap();
    let exe = work.dir.join("readme");
    let mut cmd = strict_command(false);
    let mut lib = OsString::from("-L");
    lib.push(&work.lib);
    cmd.arg(&source).arg("-o").arg(&exe).arg(lib).arg("-lsmyrf");
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "the README's C example does not build: {cmd:?}\n{}",
        output_text(&output)
    );
    let output = Command::new(&exe)
        .env("LD_LIBRARY_PATH", &work.lib)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
}

fn sh(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// What cargo leaves in target/release, for the install script's LIBDIR.
fn cargo_output(work: &Work) -> PathBuf {
    let (so, a) = built_libraries();
    let cargo_out = work.dir.join("cargo-out");
    std::fs::create_dir_all(&cargo_out).unwrap();
    std::os::unix::fs::symlink(&so, cargo_out.join("libsmyrf.so")).unwrap();
    std::os::unix::fs::symlink(&a, cargo_out.join("libsmyrf.a")).unwrap();
    cargo_out
}

/// Runs `scripts/install.sh PREFIX` on `cargo_out` with the extra environment `env`.
fn install(cargo_out: &Path, prefix: &Path, env: &[(&str, &Path)]) {
    let mut cmd = Command::new("sh");
    cmd.arg(repo_root().join("scripts/install.sh"))
        .arg(prefix)
        .env("LIBDIR", cargo_out)
        .env_remove("DESTDIR")
        .env_remove("LIBSUBDIR");
    for (name, value) in env {
        cmd.env(name, value);
    }
    sh(&mut cmd);
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
    let cargo_out = cargo_output(&work);
    let prefix = work.dir.join("prefix");
    install(&cargo_out, &prefix, &[]);
    let version = env!("CARGO_PKG_VERSION");
    let soname = soname();
    let lib = prefix.join("lib");
    assert!(lib.join(format!("libsmyrf.so.{version}")).is_file());
    assert_eq!(
        std::fs::read_link(lib.join(&soname)).unwrap(),
        Path::new(&format!("libsmyrf.so.{version}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libsmyrf.so")).unwrap(),
        Path::new(&soname)
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
    assert_eq!(ran.matches("isa: ").count(), 4, "{ran}");

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

/// Configures and builds `c_examples/CMakeLists.txt` into `work.dir/name`, finding the
/// package with `locate` (a `-D` option), with the compilers of the other tests.
fn cmake_examples(work: &Work, locate: &OsString, name: &str) -> PathBuf {
    let build_dir = work.dir.join(name);
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(repo_root().join("c_examples"))
        .arg("-B")
        .arg(&build_dir)
        .arg(locate);
    cmake_compilers(&mut configure);
    sh(configure.env_remove("MAKEFLAGS"));
    sh(Command::new("cmake")
        .arg("--build")
        .arg(&build_dir)
        .env_remove("MAKEFLAGS"));
    build_dir
}

/// The cc crate's compilers and flags the bitwise comparison needs (as in `build`).
fn cmake_compilers(cmd: &mut Command) {
    for (lang, cpp) in [("C", false), ("CXX", true)] {
        let mut compiler = OsString::from(format!("-DCMAKE_{lang}_COMPILER="));
        compiler.push(common::cbuild::compiler(cpp).path());
        cmd.arg(compiler)
            .arg(format!("-DCMAKE_{lang}_FLAGS=-O2 -ffp-contract=off"));
    }
}

/// Runs the three CMake-built programs against the install whose libraries are in `lib`
/// and compares them with the Rust API.
fn check_cmake_programs(build_dir: &Path, lib: &Path) {
    let installed = Work {
        dir: build_dir.to_path_buf(),
        lib: lib.to_path_buf(),
        static_lib: lib.join("libsmyrf.a"),
    };
    check_basic(&installed, &build_dir.join("basic"));
    check_basic(&installed, &build_dir.join("basic-static"));
    check_engine(&installed, &build_dir.join("engine"));
    // No LD_LIBRARY_PATH: the runpath CMake takes from the imported target finds the install.
    let ran = sh(Command::new(build_dir.join("basic")).env_remove("LD_LIBRARY_PATH"));
    assert!(ran.contains("isa: "), "{ran}");
}

/// `find_package(smyrf REQUEST)` for each request, in one throwaway project, against the
/// package in `prefix`; returns whether each was found (None: CMake too old to ask).
fn version_requests(work: &Work, prefix: &Path, requests: &[&str]) -> Vec<Option<bool>> {
    let project = work.dir.join("version-probe");
    std::fs::create_dir_all(&project).unwrap();
    let mut text = String::from(
        "cmake_minimum_required(VERSION 3.16)\nproject(smyrf_version_probe LANGUAGES C)\n",
    );
    for (i, request) in requests.iter().enumerate() {
        // Version ranges exist from CMake 3.19 on.
        let guard = if request.contains("...") {
            "CMAKE_VERSION VERSION_GREATER_EQUAL 3.19"
        } else {
            "TRUE"
        };
        text.push_str(&format!(
            "if({guard})\n  unset(smyrf_FOUND)\n  find_package(smyrf {request} QUIET)\n  \
             message(STATUS \"request {i}: ${{smyrf_FOUND}}\")\nelse()\n  \
             message(STATUS \"request {i}: skipped\")\nendif()\n"
        ));
    }
    std::fs::write(project.join("CMakeLists.txt"), text).unwrap();
    let mut prefix_path = OsString::from("-DCMAKE_PREFIX_PATH=");
    prefix_path.push(prefix);
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(&project)
        .arg("-B")
        .arg(work.dir.join("version-probe-build"))
        .arg(prefix_path);
    cmake_compilers(&mut configure);
    let out = sh(configure.env_remove("MAKEFLAGS"));
    (0..requests.len())
        .map(|i| {
            let tag = format!("-- request {i}: ");
            let value = out
                .lines()
                .find_map(|l| l.strip_prefix(&tag))
                .unwrap_or_else(|| panic!("no `{tag}` line in\n{out}"));
            match value {
                "skipped" => None,
                v => Some(["1", "TRUE", "ON", "YES"].contains(&v.to_uppercase().as_str())),
            }
        })
        .collect()
}

/// The CMake package the install script writes: `c_examples/CMakeLists.txt` finds it in a
/// prefix and in a DESTDIR-staged install moved elsewhere, the three programs it builds
/// reproduce the Rust API, and the version file answers by the SONAME policy (design §3).
#[test]
fn install_script_cmake_package() {
    for tool in ["cmake", "make", "sh"] {
        if !have(tool) {
            common::require::unavailable("cmake", &format!("`{tool}` is not installed"));
            return;
        }
    }
    let work = work("cmake");
    let cargo_out = cargo_output(&work);

    let prefix = work.dir.join("prefix");
    install(&cargo_out, &prefix, &[]);
    let package = prefix.join("lib/cmake/smyrf");
    assert!(package.join("smyrfConfig.cmake").is_file());
    assert!(package.join("smyrfConfigVersion.cmake").is_file());
    let mut locate = OsString::from("-DCMAKE_PREFIX_PATH=");
    locate.push(&prefix);
    let build_dir = cmake_examples(&work, &locate, "build");
    check_cmake_programs(&build_dir, &prefix.join("lib"));

    // Staged for /opt/smyrf with a two-level library directory, then moved: the package
    // finds its files from where it lies, not from the PREFIX it was installed for.
    let stage = work.dir.join("stage");
    let libsub = Path::new("lib/multiarch");
    install(
        &cargo_out,
        Path::new("/opt/smyrf"),
        &[("DESTDIR", &stage), ("LIBSUBDIR", libsub)],
    );
    let moved = work.dir.join("moved");
    std::fs::rename(stage.join("opt/smyrf"), &moved).unwrap();
    let moved_lib = moved.join(libsub);
    let mut locate = OsString::from("-Dsmyrf_DIR=");
    locate.push(moved_lib.join("cmake/smyrf"));
    let moved_build = cmake_examples(&work, &locate, "moved-build");
    check_cmake_programs(&moved_build, &moved_lib);
    // smyrf::smyrf_static really is the archive: basic-static runs without any .so.
    for entry in std::fs::read_dir(&moved_lib).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().contains(".so") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let moved_install = Work {
        dir: moved_build.clone(),
        lib: moved_lib.clone(),
        static_lib: moved_lib.join("libsmyrf.a"),
    };
    check_basic(&moved_install, &moved_build.join("basic-static"));

    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let mut cases = vec![
        (String::new(), true),
        (version.to_string(), true),
        (format!("{version} EXACT"), true),
        (format!("{major}.{minor}"), true),
        (format!("{major}.{minor}.{}", patch + 1), false),
        (format!("{major}.{}", minor + 1), false),
        (format!("{}", major + 1), false),
        (format!("{major}.{minor}...<{major}.{}", minor + 1), true),
        (format!("{major}.{}...{}", minor + 1, major + 2), false),
    ];
    if minor > 0 {
        // An older minor: a different ABI in 0.y, a compatible one from 1.0 on.
        cases.push((format!("{major}.{}", minor - 1), major > 0));
    }
    let requests: Vec<&str> = cases.iter().map(|(r, _)| r.as_str()).collect();
    let found = version_requests(&work, &prefix, &requests);
    for ((request, expected), found) in cases.iter().zip(found) {
        if let Some(found) = found {
            assert_eq!(
                found, *expected,
                "find_package(smyrf {request}) against {version}"
            );
        }
    }
}
