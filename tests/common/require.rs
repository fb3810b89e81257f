//! What a test does when it cannot run its subject on this machine: it fails when the
//! comma-separated environment variable `SMYRF_REQUIRE` names the subject (or is `all`), and
//! otherwise says why on stderr and lets the caller return. CI sets `SMYRF_REQUIRE` to
//! everything its machine has (`.ci/run`), so nothing there passes untested.
//!
//! Subjects: `avx2`, `avx512`, `neon` (a kernel tier the CPU must have); `asan` (gcc's
//! AddressSanitizer and UndefinedBehaviorSanitizer runtimes); `asan-lib` (a library built
//! with `-Zsanitizer=address`, given in `SMYRF_ASAN_LIBDIR`); `readelf`; `install` (`make`,
//! `pkg-config` and `sh` for the install script and the Makefile); `cmake` (`cmake`, `make`
//! and `sh` for the install script's CMake package and `c_examples/CMakeLists.txt`).

/// Whether `SMYRF_REQUIRE` names `subject`.
pub fn required(subject: &str) -> bool {
    std::env::var("SMYRF_REQUIRE").is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|name| name == subject || name == "all")
    })
}

/// Reports that `subject` cannot run here: panics when it is required, otherwise prints the
/// reason; the caller returns.
pub fn unavailable(subject: &str, reason: &str) {
    assert!(
        !required(subject),
        "{subject} is required (SMYRF_REQUIRE) but cannot run here: {reason}"
    );
    eprintln!("not run: {subject}: {reason}");
}
