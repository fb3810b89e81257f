//! `tests/abi/workspace.c`, a C caller that owns its calls' memory (design §3): it sizes the
//! workspace with `smyrf_plan_workspace_size` / `smyrf_dense_workspace_size`, allocates it
//! itself, and replaces the C library's allocation functions with counting ones. Built with
//! strict warnings against the freshly built `libsmyrf.so` and run: every call with a
//! workspace, on the caller's thread and on an engine's worker threads, allocates nothing
//! and gives the bits of the same call without one.

#![cfg(target_os = "linux")]

mod common;

use common::cbuild::{
    built_shared_library, fresh_dir, install_shared, output_text, strict_command,
};
use common::repo_root;
use std::process::Command;

#[test]
fn a_c_caller_with_a_workspace_sees_no_allocation_during_its_calls() {
    let dir = fresh_dir("c_workspace", "workspace");
    let lib = dir.join("lib");
    install_shared(&lib, &built_shared_library());
    let exe = dir.join("workspace");
    let output = strict_command(false)
        .arg("-pthread")
        .arg(repo_root().join("tests/abi/workspace.c"))
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
    let output = Command::new(&exe).output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "run failed:\n{text}");
    let mut kinds = vec![
        "smyrf, caller's thread",
        "smyrf, engine",
        "smyrf blocks, caller's thread",
        "smyrf blocks, engine",
    ];
    // Without a plan each call reads `SMYRF_ISA`, which allocates its value when set.
    if std::env::var("SMYRF_ISA").map_or(true, |isa| isa.is_empty()) {
        kinds.push("dense, engine");
    }
    for kind in kinds {
        assert!(
            text.contains(&format!("{kind}: 0 allocations")),
            "{kind}:\n{text}"
        );
    }
    // The counters see the library's allocations: the first call on a fresh plan, without a
    // workspace, grows the plan's scratch.
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("smyrf, caller's thread:") && !first.ends_with("; 0 without it)"),
        "{text}"
    );
}
