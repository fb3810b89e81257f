//! Building and running C and C++ programs against the library cargo built for this test
//! run, with the `cc` crate's compiler detection (the target and host come from build.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The system libraries a static link of `libsmyrf.a` needs, as the README, the Makefile,
/// the install script and the pkg-config file name them.
pub const STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// The flags of a sanitized build (AddressSanitizer and UndefinedBehaviorSanitizer).
pub const SANITIZE: [&str; 4] = [
    "-O1",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

/// The directory holding the test executable (`target/<profile>/deps`) and its parent.
fn output_dirs() -> [PathBuf; 2] {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let parent = deps.parent().unwrap().to_path_buf();
    [deps, parent]
}

/// The libraries cargo built for this test run: `cargo test` compiles the library with
/// all its crate types (rlib, cdylib, staticlib) next to the test executable in `deps/`.
/// Returns (`libsmyrf.so`, `libsmyrf.a`).
pub fn built_libraries() -> (PathBuf, PathBuf) {
    for dir in output_dirs() {
        let (so, a) = (dir.join("libsmyrf.so"), dir.join("libsmyrf.a"));
        if so.is_file() && a.is_file() {
            return (so, a);
        }
    }
    panic!(
        "libsmyrf.so / libsmyrf.a not found next to {}",
        std::env::current_exe().unwrap().display()
    );
}

/// The shared library cargo built for this test run, next to the test executable.
pub fn built_shared_library() -> PathBuf {
    output_dirs()
        .iter()
        .map(|dir| dir.join("libsmyrf.so"))
        .find(|so| so.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libsmyrf.so not found next to {}",
                std::env::current_exe().unwrap().display()
            )
        })
}

/// A fresh (emptied) directory `target/<profile>/<group>/<name>`.
pub fn fresh_dir(group: &str, name: &str) -> PathBuf {
    let dir = output_dirs()[1].join(group).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SONAME of this version (design §3): `libsmyrf.so.0.MINOR` for 0.y releases,
/// `libsmyrf.so.MAJOR` from 1.0 on.
pub fn soname() -> String {
    match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("libsmyrf.so.0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        major => format!("libsmyrf.so.{major}"),
    }
}

/// Puts `library` into `dir` under its SONAME (see [`soname`]) plus the `libsmyrf.so` link
/// the linker looks for, like an installed copy.
#[cfg(unix)]
pub fn install_shared(dir: &Path, library: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let soname = soname();
    std::fs::copy(library, dir.join(&soname)).unwrap();
    std::os::unix::fs::symlink(&soname, dir.join("libsmyrf.so")).unwrap();
}

/// The C (or, with `cpp`, C++) compiler for the target the tests were built for.
pub fn compiler(cpp: bool) -> cc::Tool {
    cc::Build::new()
        .cpp(cpp)
        .target(env!("SMYRF_BUILD_TARGET"))
        .host(env!("SMYRF_BUILD_HOST"))
        .opt_level(1)
        .debug(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .unwrap_or_else(|e| panic!("no C/C++ compiler found: {e}"))
}

/// A compiler command with the language standard (C11 or C++17), strict warnings as
/// errors, and the committed header on the include path; the caller adds the rest.
pub fn strict_command(cpp: bool) -> Command {
    let mut cmd = compiler(cpp).to_command();
    cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" })
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(super::repo_root().join("include"));
    cmd
}

/// Whether `-fsanitize=address,undefined` programs build and run here (they need the
/// libasan/libubsan runtimes, and LeakSanitizer needs ptrace-like access); `dir` holds the
/// probe. Err with the reason otherwise.
pub fn sanitizers_work(dir: &Path) -> Result<(), String> {
    let source = dir.join("probe.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let exe = dir.join("probe");
    let output = compiler(false)
        .to_command()
        .args(["-fsanitize=address,undefined"])
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let output = Command::new(&exe).output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(())
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// A finished command's stdout followed by its stderr.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
