//! Programs built against other layouts of the versioned structs (design §3): a C caller
//! compiled against the frozen header of an earlier release as it shipped, one with the
//! optional fields of `smyrf_config` and `smyrf_call_args` removed from that header's end
//! (an older caller), and one with a field appended to this release's header (a newer
//! caller, whose extra bytes are zero), all run against this library and compared with the
//! Rust API bit for bit. A newer caller that sets its
//! extra option is refused and nothing is written.

mod common;

use common::bits::same_bits;
use common::cbuild::{built_shared_library, compiler, fresh_dir, install_shared, output_text};
use common::repo_root;
use smyrf::{CallOptions, Config, Plan, TensorView, TensorViewMut};
use std::path::Path;
use std::process::Command;

/// The frozen header of an earlier release (0.2.0).
const FROZEN: &str = "tests/abi/smyrf-0.2.h";

/// The fields an older caller lacks: everything after the first released layouts.
const OPTIONAL_FIELDS: [&str; 11] = [
    "    uint32_t n_sinks;",
    "    uint32_t sink_selection;",
    "    uint32_t window;",
    "    uint32_t n_samples;",
    "    uint32_t sample_group;",
    "    uint32_t bf16_exact;",
    "    smyrf_parallel_for_fn parallel_for;",
    "    void *parallel_context;",
    "    uint32_t parallel_workers;",
    "    void *workspace;",
    "    size_t workspace_size;",
];

fn older_header(frozen: &str) -> String {
    let mut text = frozen.to_owned();
    for field in OPTIONAL_FIELDS {
        let line = format!("{field}\n");
        assert_eq!(
            text.matches(&line).count(),
            1,
            "{field} once in the frozen header"
        );
        text = text.replace(&line, "");
    }
    text
}

fn newer_header(current: &str) -> String {
    let mut text = current.to_owned();
    for end in ["} smyrf_config;\n", "} smyrf_call_args;\n"] {
        assert_eq!(text.matches(end).count(), 1);
        text = text.replace(end, &format!("    uint64_t future_option;\n{end}"));
    }
    text
}

/// Builds `tests/abi/versions.c` against `header` and runs it; returns its stdout and output.
fn build_and_run(dir: &Path, header: &str, newer: bool) -> (String, Vec<f32>) {
    std::fs::create_dir_all(dir.join("include")).unwrap();
    std::fs::write(dir.join("include/smyrf.h"), header).unwrap();
    let lib = dir.join("lib");
    install_shared(&lib, &built_shared_library());
    let exe = dir.join("versions");
    // As `strict_command`, with the variant header instead of the committed one.
    let mut cmd = compiler(false).to_command();
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(dir.join("include"));
    if newer {
        cmd.arg("-DSMYRF_TEST_NEWER");
    }
    let output = cmd
        .arg(repo_root().join("tests/abi/versions.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg("-lsmyrf")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "build failed:\n{}",
        output_text(&output)
    );
    let data = dir.join("out.bin");
    let output = Command::new(&exe).arg(&data).output().unwrap();
    assert!(
        output.status.success(),
        "run failed:\n{}",
        output_text(&output)
    );
    let bytes = std::fs::read(&data).unwrap();
    let floats = bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    (String::from_utf8_lossy(&output.stdout).into_owned(), floats)
}

/// What `versions.c` computes, through the Rust API.
fn reference() -> Vec<f32> {
    let (b, h, n, d) = (1, 2, 64, 8);
    let len = b * h * n * d;
    let gen = |mul: usize, modulus: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * mul) % modulus) as f32 / modulus as f32 - 0.5)
            .collect()
    };
    let (q, k, v) = (gen(7919, 997), gen(104729, 991), gen(3571, 983));
    let mask: Vec<u8> = (0..b * n).map(|j| u8::from(j % 5 != 0)).collect();
    let plan = Plan::new(Config::default().q_cluster_size(16).num_threads(1), d).unwrap();
    let mut out = vec![0.0; len];
    plan.attention_with(
        &TensorView::bhnd(&q, b, h, n, d).unwrap(),
        &TensorView::bhnd(&k, b, h, n, d).unwrap(),
        &TensorView::bhnd(&v, b, h, n, d).unwrap(),
        &mut TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap(),
        CallOptions::new().key_mask(&mask),
    )
    .unwrap();
    out
}

#[test]
fn the_earlier_layout_is_a_prefix_of_this_release_s() {
    // The frozen copy must describe the same structs as the header this library ships: it
    // may gain declarations in later releases, but a struct may only grow at its end.
    let frozen = std::fs::read_to_string(repo_root().join(FROZEN)).unwrap();
    let current = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    for name in [
        "smyrf_config",
        "smyrf_tensor",
        "smyrf_tensor_mut",
        "smyrf_call_args",
    ] {
        let body = |text: &str| -> Vec<String> {
            let start = text
                .find(&format!("typedef struct {name} {{"))
                .unwrap_or_else(|| panic!("{name} in the header"));
            let end = start + text[start..].find(&format!("}} {name};")).unwrap();
            text[start..end]
                .lines()
                .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('*'))
                .filter(|l| !l.trim_start().starts_with("/*"))
                .map(str::to_owned)
                .collect()
        };
        let (old, new) = (body(&frozen), body(&current));
        assert!(
            new.len() >= old.len() && new[..old.len()] == old[..],
            "{name}: the fields of the frozen layout must stay a prefix:\n{old:#?}\n{new:#?}"
        );
    }
}

#[test]
fn a_caller_built_against_the_earlier_release_is_served() {
    let frozen = std::fs::read_to_string(repo_root().join(FROZEN)).unwrap();
    let dir = fresh_dir("c_abi_versions", "earlier");
    let (stdout, out) = build_and_run(&dir, &frozen, false);
    use smyrf::internals::ffi::{smyrf_call_args, smyrf_config};
    assert!(stdout.contains("config 64 args 80"), "{stdout}");
    assert!(std::mem::size_of::<smyrf_config>() > 64);
    assert!(std::mem::size_of::<smyrf_call_args>() > 80);
    assert!(same_bits(&out, &reference()));
}

#[test]
fn an_older_caller_gets_the_defaults_for_the_fields_it_lacks() {
    let frozen = std::fs::read_to_string(repo_root().join(FROZEN)).unwrap();
    let dir = fresh_dir("c_abi_versions", "older");
    let (stdout, out) = build_and_run(&dir, &older_header(&frozen), false);
    let sizes = format!(
        "config {} args {}",
        smyrf::internals::ffi::SMYRF_CONFIG_MIN_SIZE,
        smyrf::internals::ffi::SMYRF_CALL_ARGS_MIN_SIZE
    );
    assert!(stdout.contains(&sizes), "{stdout}");
    assert!(same_bits(&out, &reference()));
}

#[test]
fn a_newer_caller_with_zero_extra_bytes_is_served_and_a_set_option_refused() {
    // A newer caller's structs extend this release's, not the frozen older ones.
    let current = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    let dir = fresh_dir("c_abi_versions", "newer");
    let (stdout, out) = build_and_run(&dir, &newer_header(&current), true);
    use smyrf::internals::ffi::{smyrf_call_args, smyrf_config};
    let sizes = format!(
        "config {} args {}",
        std::mem::size_of::<smyrf_config>() + 8,
        std::mem::size_of::<smyrf_call_args>() + 8
    );
    assert!(stdout.contains(&sizes), "{stdout}");
    assert!(stdout.contains("newer call option: refused"), "{stdout}");
    assert!(stdout.contains("newer config option: refused"), "{stdout}");
    assert!(same_bits(&out, &reference()));
}
