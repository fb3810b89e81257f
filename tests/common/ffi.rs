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

/// The C descriptor of an f32 tensor of `shape` at `data`: built by the C initialiser (so
/// `struct_size` and `dtype` are set), then given the shape's strides.
pub fn c_tensor(data: *const f32, shape: smyrf::Shape) -> smyrf_tensor {
    let mut t = smyrf_tensor_bhnd(
        data.cast(),
        smyrf_dtype::SMYRF_DTYPE_F32 as u32,
        shape.batch,
        shape.heads,
        shape.seq_len,
        shape.dim,
    );
    t.batch_stride = shape.batch_stride;
    t.head_stride = shape.head_stride;
    t.seq_stride = shape.seq_stride;
    t
}

/// As [`c_tensor`], for an output.
pub fn c_tensor_mut(data: *mut f32, shape: smyrf::Shape) -> smyrf_tensor_mut {
    let mut t = smyrf_tensor_mut_bhnd(
        data.cast(),
        smyrf_dtype::SMYRF_DTYPE_F32 as u32,
        shape.batch,
        shape.heads,
        shape.seq_len,
        shape.dim,
    );
    t.batch_stride = shape.batch_stride;
    t.head_stride = shape.head_stride;
    t.seq_stride = shape.seq_stride;
    t
}

/// Call options from the C initialiser with a key mask and an lse output (NULL for none).
pub fn c_args(key_mask: *const u8, lse_out: *mut f32) -> smyrf_call_args {
    let mut args = smyrf_call_args_default();
    args.key_mask = key_mask;
    args.lse_out = lse_out;
    args
}
