//! Small helpers for calling the C ABI from Rust through `smyrf::internals::ffi`.

use smyrf::internals::ffi::*;
use std::ffi::{c_char, CStr};
use std::ptr::null_mut;

/// This thread's last error message, copied.
pub fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string that stays valid until the next
    // status-returning call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(smyrf_last_error_message()) }
        .to_str()
        .unwrap()
        .to_owned()
}

/// One of the library's static strings (version, status message, tier name).
pub fn c_str(ptr: *const c_char) -> &'static str {
    assert!(!ptr.is_null());
    // SAFETY: the library's static strings are NUL-terminated and live forever.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap()
}

/// A plan through `smyrf_plan_create`, which must succeed; the caller destroys it.
pub fn create_plan(config: &smyrf_config, head_dim: usize) -> *mut smyrf_plan {
    let mut plan = null_mut();
    // SAFETY: valid config and out pointer.
    let status = unsafe { smyrf_plan_create(config, head_dim, &mut plan) };
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(!plan.is_null());
    plan
}
