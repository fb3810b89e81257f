//! Build script: generates the C header from `src/ffi/mod.rs` with cbindgen (design §3) into
//! OUT_DIR, so ordinary builds never touch the source tree; `SMYRF_UPDATE_HEADER=1` also
//! writes the committed `include/smyrf.h` (a test fails while the two differ). Also sets
//! the SONAME of `libsmyrf.so` and tells the tests which target they were built for.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi/mod.rs");
    // So that `SMYRF_UPDATE_HEADER=1` also restores a hand-edited committed copy.
    println!("cargo:rerun-if-changed=include/smyrf.h");
    println!("cargo:rerun-if-env-changed=SMYRF_UPDATE_HEADER");

    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets CARGO_PKG_VERSION_MINOR");
    let patch = env::var("CARGO_PKG_VERSION_PATCH").expect("cargo sets CARGO_PKG_VERSION_PATCH");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // The ABI version (design §3, cargo-c's convention): programs record this name and
        // keep working across compatible updates; in 0.y a minor release may break the ABI.
        let abi = if major == "0" {
            format!("0.{minor}")
        } else {
            major.clone()
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsmyrf.so.{abi}");
    }
    // The C tests compile C with the `cc` crate, which needs the target and host triples.
    for var in ["TARGET", "HOST"] {
        let value = env::var(var).expect("cargo sets TARGET and HOST");
        println!("cargo:rustc-env=SMYRF_BUILD_{var}={value}");
    }

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut config = cbindgen::Config::from_file(manifest.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    config.after_includes = Some(format!(
        "\n/**\n * Version of the library this header belongs to (semantic versioning); compare\n * with smyrf_version() at run time.\n */\n\
         #define SMYRF_VERSION_MAJOR {major}\n\
         /**\n * Minor version, see SMYRF_VERSION_MAJOR.\n */\n\
         #define SMYRF_VERSION_MINOR {minor}\n\
         /**\n * Patch version, see SMYRF_VERSION_MAJOR.\n */\n\
         #define SMYRF_VERSION_PATCH {patch}\n"
    ));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(manifest.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate the header: {e}"));
    bindings.write_to_file(out_dir.join("smyrf.h"));
    if env::var_os("SMYRF_UPDATE_HEADER").is_some_and(|v| !v.is_empty() && v != "0") {
        bindings.write_to_file(manifest.join("include/smyrf.h"));
    }
}
