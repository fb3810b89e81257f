//! The C ABI's entry points called from Rust through `smyrf::internals::ffi` (design §2,
//! §3): status codes and their messages, tier names, the default config, projections,
//! scratch estimates and the thread-local last error; bad calls return the right status
//! with a message naming the problem and write nothing; good calls equal the Rust API
//! bitwise.

mod common;
use common::ffi::{c_str, create_plan, last_error};
use common::{same_bits, Rng, SENTINEL};
use smyrf::internals::ffi::*;
use smyrf::{gaussian_projections, Config, Isa, Plan, TensorView, TensorViewMut};
use std::ptr::{null, null_mut, NonNull};

// ---------------------------------------------------------------------------------------
// Small entry points

#[test]
fn status_messages_cover_every_code() {
    let mut seen = Vec::new();
    for code in 0..=5u32 {
        let text = c_str(smyrf_status_message(code));
        assert!(
            !text.is_empty() && !text.contains("unknown"),
            "{code}: {text}"
        );
        assert!(!seen.contains(&text), "duplicate message {text}");
        seen.push(text);
    }
    for code in [6, 99, 1 << 31, u32::MAX] {
        assert_eq!(c_str(smyrf_status_message(code)), "unknown status code");
    }
    assert_eq!(smyrf_status::SMYRF_ERROR_NULL_POINTER as u32, 1);
    assert_eq!(smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT as u32, 2);
    assert_eq!(smyrf_status::SMYRF_ERROR_UNSUPPORTED_ISA as u32, 3);
    assert_eq!(smyrf_status::SMYRF_ERROR_OUT_OF_MEMORY as u32, 4);
    assert_eq!(smyrf_isa::SMYRF_ISA_PORTABLE as u32, 1);
    assert_eq!(smyrf_isa::SMYRF_ISA_AVX2 as u32, 2);
    assert_eq!(smyrf_isa::SMYRF_ISA_AVX512 as u32, 3);
}

#[test]
fn isa_names_and_destroy_null() {
    // SAFETY: NULL asks for the detected tier.
    assert_eq!(
        c_str(unsafe { smyrf_isa_name(null()) }),
        smyrf::detected_isa().name()
    );
    let mut config = smyrf_config_default();
    config.isa = smyrf_isa::SMYRF_ISA_PORTABLE as u32;
    let plan = create_plan(&config, 8);
    // SAFETY: a live plan.
    assert_eq!(c_str(unsafe { smyrf_isa_name(plan) }), "portable");
    // SAFETY: destroying a live plan once, and NULL (a no-op).
    unsafe {
        smyrf_plan_destroy(plan);
        smyrf_plan_destroy(null_mut());
    }
}

#[test]
fn default_config_matches_the_contract() {
    let c = smyrf_config_default();
    assert_eq!(
        (c.n_hashes, c.q_cluster_size, c.k_cluster_size, c.scale),
        (2, 64, 0, 0.0)
    );
    assert_eq!((c.seed, c.num_threads, c.isa), (0, 0, 0));
    assert_eq!(
        (
            c.n_sinks,
            c.sink_selection,
            c.window,
            c.n_samples,
            c.sample_group,
            c.n_selected,
            c.select_dims,
            c.n_blocks,
            c.block_size,
            c.block_tile,
            c.reserved
        ),
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    );
    // Every versioned struct carries its size; the minimum sizes end on the fields the
    // header names.
    assert_eq!(c.struct_size, std::mem::size_of::<smyrf_config>());
    assert_eq!(std::mem::size_of::<smyrf_config>(), 88);
    // No padding: every byte is a field the library reads.
    assert_eq!(
        std::mem::offset_of!(smyrf_config, reserved) + 4,
        std::mem::size_of::<smyrf_config>()
    );
    assert_eq!(
        SMYRF_CONFIG_MIN_SIZE,
        std::mem::offset_of!(smyrf_config, isa) + 4
    );
    assert_eq!(std::mem::size_of::<smyrf_tensor>(), SMYRF_TENSOR_MIN_SIZE);
    assert_eq!(
        std::mem::size_of::<smyrf_tensor_mut>(),
        SMYRF_TENSOR_MIN_SIZE
    );
    let args = smyrf_call_args_default();
    assert_eq!(args.struct_size, std::mem::size_of::<smyrf_call_args>());
    assert_eq!(
        SMYRF_CALL_ARGS_MIN_SIZE,
        std::mem::offset_of!(smyrf_call_args, lse_out) + 8
    );
    let t = smyrf_tensor_bhnd(null(), 1, 2, 3, 4, 5);
    assert_eq!(
        (
            t.struct_size,
            t.dtype,
            t.batch_stride,
            t.head_stride,
            t.seq_stride
        ),
        (SMYRF_TENSOR_MIN_SIZE, 1, 3 * 4 * 5, 4 * 5, 5)
    );
    let t = smyrf_tensor_mut_bnhd(null_mut(), 2, 2, 3, 4, 5);
    assert_eq!(
        (t.dtype, t.batch_stride, t.head_stride, t.seq_stride),
        (2, 4 * 3 * 5, 5, 3 * 5)
    );
}

#[test]
fn projections_round_trip_and_match_the_seed() {
    let (d, rounds) = (12, 3);
    let mut config = smyrf_config_default();
    config.n_hashes = rounds as u32;
    config.seed = 99;
    let plan = create_plan(&config, d);
    let mut a = vec![SENTINEL; (d + 2) * rounds];
    // SAFETY: a live plan and a buffer of the stated length.
    let status = unsafe { smyrf_plan_projections(plan, a.as_mut_ptr(), a.len()) };
    assert_eq!(status, smyrf_status::SMYRF_OK);
    assert_eq!(a, gaussian_projections(99, d, rounds));

    // A plan from the same matrix, with another seed, computes the same attention.
    let mut other = null_mut();
    config.seed = 1;
    // SAFETY: valid config, matrix of the stated length, out pointer.
    let status =
        unsafe { smyrf_plan_create_with_projections(&config, d, a.as_ptr(), a.len(), &mut other) };
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    let mut b = vec![0.0; a.len()];
    // SAFETY: as above.
    unsafe { smyrf_plan_projections(other, b.as_mut_ptr(), b.len()) };
    assert_eq!(a, b);
    let fixture = Fixture::new(2, 4, 2, 40, 12);
    let (mut first, mut second) = (fixture.clone(), fixture);
    assert_eq!(first.run(plan), smyrf_status::SMYRF_OK);
    assert_eq!(second.run(other), smyrf_status::SMYRF_OK);
    assert!(same_bits(&first.out, &second.out));
    // SAFETY: live plans, destroyed once.
    unsafe {
        smyrf_plan_destroy(plan);
        smyrf_plan_destroy(other);
    }
}

#[test]
fn scratch_bytes_match_the_rust_api() {
    let mut config = smyrf_config_default();
    config.num_threads = 1;
    let plan = create_plan(&config, 64);
    let rust = Plan::new(Config::default().num_threads(1), 64).unwrap();
    let mut bytes = 0usize;
    // SAFETY: a live plan and a writable out pointer.
    let status = unsafe { smyrf_plan_scratch_bytes(plan, 4096, 2048, 48, &mut bytes) };
    assert_eq!(status, smyrf_status::SMYRF_OK);
    assert_eq!(bytes, rust.scratch_bytes(4096, 2048, 48));
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn last_error_is_cleared_by_the_next_call() {
    let mut config = smyrf_config_default();
    config.n_hashes = 0;
    let mut plan = null_mut();
    // SAFETY: valid pointers.
    let status = unsafe { smyrf_plan_create(&config, 8, &mut plan) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert_eq!(
        last_error(),
        "smyrf_plan_create: config.n_hashes: must be at least 1 (0 only with design §8 blocks, in causal calls)"
    );
    config.n_hashes = 1;
    // SAFETY: valid pointers.
    let status = unsafe { smyrf_plan_create(&config, 8, &mut plan) };
    assert_eq!(status, smyrf_status::SMYRF_OK);
    assert_eq!(last_error(), "");
    // Another thread has its own message.
    std::thread::spawn(|| assert_eq!(last_error(), ""))
        .join()
        .unwrap();
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

// ---------------------------------------------------------------------------------------
// Attention calls from Rust through the C ABI

/// Buffers of one call in `[B, N, H, D]` layout (strided views), with a key mask that pads
/// the last batch element.
#[derive(Clone)]
struct Fixture {
    b: usize,
    hq: usize,
    hkv: usize,
    n: usize,
    d: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Vec<u8>,
    out: Vec<f32>,
    lse: Vec<f32>,
}

impl Fixture {
    fn new(b: usize, hq: usize, hkv: usize, n: usize, d: usize) -> Fixture {
        let mut rng = Rng(5);
        let mut mask = vec![1u8; b * n];
        for j in n - n / 4..n {
            mask[(b - 1) * n + j] = 0;
        }
        Fixture {
            b,
            hq,
            hkv,
            n,
            d,
            q: rng.vec(b * n * hq * d),
            k: rng.vec(b * n * hkv * d),
            v: rng.vec(b * n * hkv * d),
            mask,
            out: vec![SENTINEL; b * n * hq * d],
            lse: vec![SENTINEL; b * hq * n],
        }
    }

    fn tensor(&self, data: &[f32], heads: usize) -> smyrf_tensor {
        smyrf_tensor_bnhd(data.as_ptr().cast(), 0, self.b, heads, self.n, self.d)
    }

    fn args(&mut self) -> Args {
        let (n, d, hq) = (self.n, self.d, self.hq);
        Args {
            q: Some(self.tensor(&self.q, self.hq)),
            k: Some(self.tensor(&self.k, self.hkv)),
            v: Some(self.tensor(&self.v, self.hkv)),
            out: Some(smyrf_tensor_mut_bnhd(
                self.out.as_mut_ptr().cast(),
                0,
                self.b,
                hq,
                n,
                d,
            )),
            mask: self.mask.as_ptr(),
            lse: self.lse.as_mut_ptr(),
            scale: 0.0,
            causal: 0,
            query_offset: 0,
        }
    }

    fn run(&mut self, plan: *const smyrf_plan) -> smyrf_status {
        let mut args = self.args();
        args.call(plan)
    }

    /// The same call through the Rust API.
    fn rust_reference(&self, plan: &Plan) -> (Vec<f32>, Vec<f32>) {
        let (b, n, d) = (self.b, self.n, self.d);
        let mut out = vec![0.0; self.out.len()];
        let mut lse = vec![0.0; self.lse.len()];
        let q = TensorView::bnhd(&self.q, b, self.hq, n, d).unwrap();
        let k = TensorView::bnhd(&self.k, b, self.hkv, n, d).unwrap();
        let v = TensorView::bnhd(&self.v, b, self.hkv, n, d).unwrap();
        let mut o = TensorViewMut::bnhd(&mut out, b, self.hq, n, d).unwrap();
        plan.attention_with(
            &q,
            &k,
            &v,
            &mut o,
            smyrf::CallOptions::new().key_mask(&self.mask).lse(&mut lse),
        )
        .unwrap();
        (out, lse)
    }
}

/// The arguments of one attention call; `None` passes a NULL struct pointer.
struct Args {
    q: Option<smyrf_tensor>,
    k: Option<smyrf_tensor>,
    v: Option<smyrf_tensor>,
    out: Option<smyrf_tensor_mut>,
    mask: *const u8,
    lse: *mut f32,
    scale: f32,
    causal: u32,
    query_offset: u64,
}

fn opt_ptr<T>(value: &Option<T>) -> *const T {
    value.as_ref().map_or(null(), |v| v as *const T)
}

impl Args {
    fn call_args(&self) -> smyrf_call_args {
        let mut args = smyrf_call_args_default();
        args.key_mask = self.mask;
        args.lse_out = self.lse;
        args.causal = self.causal;
        args.query_offset = self.query_offset;
        args
    }

    fn call(&mut self, plan: *const smyrf_plan) -> smyrf_status {
        let args = self.call_args();
        // SAFETY: every non-NULL pointer refers to a live fixture buffer of the extent its
        // (possibly deliberately wrong) shape claims, or the call must refuse it before use.
        unsafe {
            smyrf_attention(
                plan,
                opt_ptr(&self.q),
                opt_ptr(&self.k),
                opt_ptr(&self.v),
                opt_ptr(&self.out),
                &args,
            )
        }
    }

    fn call_dense(&mut self) -> smyrf_status {
        let args = self.call_args();
        // SAFETY: as in `call`.
        unsafe {
            smyrf_dense_attention(
                opt_ptr(&self.q),
                opt_ptr(&self.k),
                opt_ptr(&self.v),
                self.scale,
                opt_ptr(&self.out),
                &args,
            )
        }
    }
}

#[test]
fn attention_through_the_c_abi_equals_the_rust_api_bitwise() {
    for (num_threads, isa) in [
        (1, Some(Isa::Portable)),
        (0, None),
        (3, Some(smyrf::detected_isa())),
    ] {
        let mut config = smyrf_config_default();
        config.n_hashes = 3;
        config.q_cluster_size = 16;
        config.seed = 11;
        config.num_threads = num_threads;
        config.isa = match isa {
            None => 0,
            Some(Isa::Portable) => 1,
            Some(Isa::Avx2) => 2,
            Some(Isa::Avx512) => 3,
            Some(Isa::Neon) => 4,
            Some(other) => panic!("no C code for {other}"),
        };
        let plan = create_plan(&config, 24);
        let rust = Plan::new(
            {
                let mut config = Config::default()
                    .n_hashes(3)
                    .q_cluster_size(16)
                    .seed(11)
                    .num_threads(num_threads as usize);
                config.isa = isa;
                config
            },
            24,
        )
        .unwrap();
        let mut fixture = Fixture::new(2, 6, 2, 100, 24);
        assert_eq!(
            fixture.run(plan),
            smyrf_status::SMYRF_OK,
            "{}",
            last_error()
        );
        let (out, lse) = fixture.rust_reference(&rust);
        assert!(
            same_bits(&fixture.out, &out),
            "output differs ({num_threads} threads)"
        );
        assert!(
            same_bits(&fixture.lse, &lse),
            "lse differs ({num_threads} threads)"
        );
        // SAFETY: destroyed once.
        unsafe { smyrf_plan_destroy(plan) };
    }
}

#[test]
fn dense_attention_through_the_c_abi_equals_the_rust_api_bitwise() {
    let mut fixture = Fixture::new(2, 4, 1, 70, 16);
    let mut args = fixture.args();
    args.scale = 0.3;
    assert_eq!(
        args.call_dense(),
        smyrf_status::SMYRF_OK,
        "{}",
        last_error()
    );
    let (b, n, d) = (2, 70, 16);
    let mut out = vec![0.0; fixture.out.len()];
    let mut lse = vec![0.0; fixture.lse.len()];
    let q = TensorView::bnhd(&fixture.q, b, 4, n, d).unwrap();
    let k = TensorView::bnhd(&fixture.k, b, 1, n, d).unwrap();
    let v = TensorView::bnhd(&fixture.v, b, 1, n, d).unwrap();
    let mut o = TensorViewMut::bnhd(&mut out, b, 4, n, d).unwrap();
    smyrf::Plan::new(smyrf::Config::default().scale(0.3), q.shape().dim)
        .and_then(|plan| {
            plan.dense_attention_with(
                &q,
                &k,
                &v,
                &mut o,
                smyrf::CallOptions::new()
                    .key_mask(&fixture.mask)
                    .lse(&mut lse),
            )
        })
        .unwrap();
    assert!(same_bits(&fixture.out, &out));
    assert!(same_bits(&fixture.lse, &lse));
}

#[test]
fn causal_calls_through_the_c_abi_equal_the_rust_api_bitwise() {
    let mut config = smyrf_config_default();
    config.q_cluster_size = 16;
    let plan = create_plan(&config, 16);
    let rust = Plan::new(Config::default().q_cluster_size(16), 16).unwrap();
    let (b, hq, hkv, n, d) = (2, 4, 2, 70, 16);
    for (causal, offset) in [
        (smyrf_causal::SMYRF_CAUSAL_BOTTOM_RIGHT, None),
        (smyrf_causal::SMYRF_CAUSAL_AT_OFFSET, Some(9usize)),
    ] {
        for dense in [false, true] {
            let mut fixture = Fixture::new(b, hq, hkv, n, d);
            let mut args = fixture.args();
            args.causal = causal as u32;
            args.query_offset = offset.unwrap_or(0) as u64;
            let status = if dense {
                args.call_dense()
            } else {
                args.call(plan)
            };
            assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
            let mut out = vec![0.0; fixture.out.len()];
            let mut lse = vec![0.0; fixture.lse.len()];
            let q = TensorView::bnhd(&fixture.q, b, hq, n, d).unwrap();
            let k = TensorView::bnhd(&fixture.k, b, hkv, n, d).unwrap();
            let v = TensorView::bnhd(&fixture.v, b, hkv, n, d).unwrap();
            let mut o = TensorViewMut::bnhd(&mut out, b, hq, n, d).unwrap();
            let options = smyrf::CallOptions::new()
                .key_mask(&fixture.mask)
                .lse(&mut lse);
            let options = match offset {
                Some(offset) => options.query_offset(offset),
                None => options.causal(),
            };
            if dense {
                rust.dense_attention_with(&q, &k, &v, &mut o, options)
            } else {
                rust.attention_with(&q, &k, &v, &mut o, options)
            }
            .unwrap();
            assert!(same_bits(&fixture.out, &out), "{causal:?} dense {dense}");
            assert!(same_bits(&fixture.lse, &lse), "{causal:?} dense {dense}");
        }
    }
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn bad_causal_arguments_are_refused() {
    expect_refusal(INVALID, "is not a smyrf_causal value", true, |args, _| {
        args.causal = 3
    });
    expect_refusal(INVALID, "query_offset is 5", true, |args, _| {
        args.query_offset = 5
    });
    expect_refusal(INVALID, "query_offset is 5", true, |args, _| {
        args.causal = smyrf_causal::SMYRF_CAUSAL_BOTTOM_RIGHT as u32;
        args.query_offset = 5;
    });
}

/// Runs a deliberately bad call (SMYRF and, when `dense`, dense attention) and checks the
/// status, that the message names the problem, and that nothing was written.
fn expect_refusal(
    expected: smyrf_status,
    needle: &str,
    dense: bool,
    bad: impl Fn(&mut Args, &mut *const smyrf_plan),
) {
    let mut config = smyrf_config_default();
    config.q_cluster_size = 8;
    let good_plan = create_plan(&config, 8);
    let mut fixture = Fixture::new(2, 4, 2, 20, 8);
    let inputs = (fixture.q.clone(), fixture.k.clone(), fixture.v.clone());
    let mut args = fixture.args();
    let mut plan = good_plan.cast_const();
    bad(&mut args, &mut plan);
    let status = args.call(plan);
    let message = last_error();
    assert_eq!(status, expected);
    assert!(
        message.starts_with("smyrf_attention: ") && message.contains(needle),
        "message `{message}` lacks `{needle}`"
    );
    if dense {
        let status = args.call_dense();
        let message = last_error();
        assert_eq!(status, expected);
        assert!(
            message.starts_with("smyrf_dense_attention: ") && message.contains(needle),
            "message `{message}` lacks `{needle}`"
        );
    }
    assert!(
        fixture.out.iter().all(|&x| x == SENTINEL),
        "out was written"
    );
    assert!(
        fixture.lse.iter().all(|&x| x == SENTINEL),
        "lse was written"
    );
    assert!(inputs == (fixture.q.clone(), fixture.k.clone(), fixture.v.clone()));
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(good_plan) };
}

const NULL: smyrf_status = smyrf_status::SMYRF_ERROR_NULL_POINTER;
const INVALID: smyrf_status = smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT;

/// The fixture's call succeeds, so each refusal below is caused by its one change.
#[test]
fn the_fixture_call_is_valid() {
    let mut config = smyrf_config_default();
    config.q_cluster_size = 8;
    let plan = create_plan(&config, 8);
    let mut fixture = Fixture::new(2, 4, 2, 20, 8);
    let mut args = fixture.args();
    assert_eq!(args.call(plan), smyrf_status::SMYRF_OK, "{}", last_error());
    assert_eq!(
        args.call_dense(),
        smyrf_status::SMYRF_OK,
        "{}",
        last_error()
    );
    assert!(fixture.out.iter().all(|&x| x != SENTINEL));
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn null_pointers_are_refused() {
    expect_refusal(NULL, "plan is NULL", false, |_, plan| *plan = null());
    expect_refusal(NULL, "q is NULL", true, |a, _| a.q = None);
    expect_refusal(NULL, "k is NULL", true, |a, _| a.k = None);
    expect_refusal(NULL, "v is NULL", true, |a, _| a.v = None);
    expect_refusal(NULL, "out is NULL", true, |a, _| a.out = None);
    expect_refusal(NULL, "q->data is NULL", true, |a, _| {
        a.q.as_mut().unwrap().data = null()
    });
    expect_refusal(NULL, "k->data is NULL", true, |a, _| {
        a.k.as_mut().unwrap().data = null()
    });
    expect_refusal(NULL, "v->data is NULL", true, |a, _| {
        a.v.as_mut().unwrap().data = null()
    });
    expect_refusal(NULL, "out->data is NULL", true, |a, _| {
        a.out.as_mut().unwrap().data = null_mut()
    });
}

#[test]
fn zero_sizes_are_refused() {
    type Field = fn(&mut Args) -> &mut usize;
    let fields: [(&str, Field); 16] = [
        ("q.batch", |a| &mut a.q.as_mut().unwrap().batch),
        ("q.heads", |a| &mut a.q.as_mut().unwrap().heads),
        ("q.seq_len", |a| &mut a.q.as_mut().unwrap().seq_len),
        ("q.dim", |a| &mut a.q.as_mut().unwrap().dim),
        ("k.batch", |a| &mut a.k.as_mut().unwrap().batch),
        ("k.heads", |a| &mut a.k.as_mut().unwrap().heads),
        ("k.seq_len", |a| &mut a.k.as_mut().unwrap().seq_len),
        ("k.dim", |a| &mut a.k.as_mut().unwrap().dim),
        ("v.batch", |a| &mut a.v.as_mut().unwrap().batch),
        ("v.heads", |a| &mut a.v.as_mut().unwrap().heads),
        ("v.seq_len", |a| &mut a.v.as_mut().unwrap().seq_len),
        ("v.dim", |a| &mut a.v.as_mut().unwrap().dim),
        ("out.batch", |a| &mut a.out.as_mut().unwrap().batch),
        ("out.heads", |a| &mut a.out.as_mut().unwrap().heads),
        ("out.seq_len", |a| &mut a.out.as_mut().unwrap().seq_len),
        ("out.dim", |a| &mut a.out.as_mut().unwrap().dim),
    ];
    for (name, field) in fields {
        expect_refusal(
            INVALID,
            &format!("{name} must be positive"),
            true,
            |a, _| *field(a) = 0,
        );
    }
}

#[test]
fn inconsistent_shapes_are_refused() {
    // Sizes that disagree between tensors (each smaller than the fixture, so the claimed
    // extents stay inside the buffers).
    expect_refusal(INVALID, "k.batch", true, |a, _| {
        a.k.as_mut().unwrap().batch = 1
    });
    expect_refusal(INVALID, "v.seq_len", true, |a, _| {
        a.v.as_mut().unwrap().seq_len = 19
    });
    expect_refusal(INVALID, "v.heads", true, |a, _| {
        a.v.as_mut().unwrap().heads = 1
    });
    expect_refusal(INVALID, "k.dim", true, |a, _| a.k.as_mut().unwrap().dim = 7);
    expect_refusal(INVALID, "out.heads", true, |a, _| {
        a.out.as_mut().unwrap().heads = 2
    });
    expect_refusal(INVALID, "out.seq_len", true, |a, _| {
        a.out.as_mut().unwrap().seq_len = 19
    });
    expect_refusal(INVALID, "out.dim", true, |a, _| {
        a.out.as_mut().unwrap().dim = 7
    });
    // 3 query heads over 2 key/value heads.
    expect_refusal(
        INVALID,
        "must be a multiple of key/value heads",
        true,
        |a, _| {
            a.q.as_mut().unwrap().heads = 3;
            a.out.as_mut().unwrap().heads = 3;
        },
    );
    // The plan was built for head dim 8; dense attention has no plan and accepts it.
    expect_refusal(INVALID, "plan was built for head dim 8", false, |a, _| {
        a.q.as_mut().unwrap().dim = 4;
        a.k.as_mut().unwrap().dim = 4;
    });
}

#[test]
fn overflowing_extents_and_overlapping_rows_are_refused() {
    expect_refusal(INVALID, "size overflows", true, |a, _| {
        a.q.as_mut().unwrap().seq_stride = usize::MAX / 2
    });
    expect_refusal(INVALID, "size overflows", true, |a, _| {
        a.k.as_mut().unwrap().batch_stride = usize::MAX
    });
    expect_refusal(INVALID, "size overflows", true, |a, _| {
        let v = a.v.as_mut().unwrap();
        v.batch = usize::MAX / 4;
        v.batch_stride = 0;
    });
    expect_refusal(INVALID, "size overflows", true, |a, _| {
        a.out.as_mut().unwrap().head_stride = usize::MAX / 3
    });
    // Output rows that share memory: every position writes the same row.
    expect_refusal(INVALID, "rows overlap", true, |a, _| {
        a.out.as_mut().unwrap().seq_stride = 0
    });
}

#[test]
fn misplaced_buffers_are_refused() {
    // `out` aliasing an input (same shape as q, so the extent stays inside q's buffer).
    expect_refusal(INVALID, "out overlaps q", true, |a, _| {
        a.out.as_mut().unwrap().data = a.q.unwrap().data.cast_mut()
    });
    expect_refusal(INVALID, "out overlaps k", true, |a, _| {
        let k = a.k.unwrap();
        a.out = Some(smyrf_tensor_mut {
            struct_size: k.struct_size,
            data: k.data.cast_mut(),
            dtype: k.dtype,
            batch: k.batch,
            heads: k.heads,
            seq_len: k.seq_len,
            dim: k.dim,
            batch_stride: k.batch_stride,
            head_stride: k.head_stride,
            seq_stride: k.seq_stride,
        });
        a.q.as_mut().unwrap().heads = 2;
    });
    expect_refusal(INVALID, "lse_out overlaps v", true, |a, _| {
        a.lse = a.v.unwrap().data.cast_mut().cast()
    });
    expect_refusal(INVALID, "lse_out overlaps out", true, |a, _| {
        a.lse = a.out.unwrap().data.cast()
    });
    expect_refusal(INVALID, "out overlaps key_mask", true, |a, _| {
        a.mask = a.out.unwrap().data.cast_const().cast()
    });
    // Misaligned data pointers.
    expect_refusal(INVALID, "q is not aligned", true, |a, _| {
        let q = a.q.as_mut().unwrap();
        q.data = q.data.cast::<u8>().wrapping_add(1).cast();
        q.batch = 1;
    });
    expect_refusal(INVALID, "lse_out is not aligned", true, |a, _| {
        a.lse = a.lse.cast::<u8>().wrapping_add(2).cast();
        a.q.as_mut().unwrap().seq_len = 19;
        a.out.as_mut().unwrap().seq_len = 19;
    });
}

#[test]
fn bad_dense_scales_are_refused() {
    for scale in [f32::NAN, -1.0, f32::INFINITY, f32::NEG_INFINITY] {
        let mut fixture = Fixture::new(1, 2, 1, 10, 4);
        let mut args = fixture.args();
        args.scale = scale;
        assert_eq!(args.call_dense(), INVALID);
        assert!(last_error().contains("scale"), "{}", last_error());
        assert!(fixture
            .out
            .iter()
            .chain(&fixture.lse)
            .all(|&x| x == SENTINEL));
    }
}

/// Plan creation: every bad config field and pointer, with `*out_plan` left untouched.
#[test]
fn bad_plans_are_refused() {
    let untouched: *mut smyrf_plan = NonNull::dangling().as_ptr();
    let check =
        |status: smyrf_status, expected: smyrf_status, needle: &str, out: *mut smyrf_plan| {
            let message = last_error();
            assert_eq!(status, expected, "{needle}: {message}");
            assert!(message.contains(needle), "`{message}` lacks `{needle}`");
            assert_eq!(out, untouched, "out_plan was written");
        };
    let create = |config: &smyrf_config, head_dim: usize, needle: &str, expected| {
        let mut out = untouched;
        // SAFETY: valid pointers.
        let status = unsafe { smyrf_plan_create(config, head_dim, &mut out) };
        check(status, expected, needle, out);
    };
    let base = smyrf_config_default();
    let with = |f: fn(&mut smyrf_config)| {
        let mut c = base;
        f(&mut c);
        c
    };
    create(&with(|c| c.n_hashes = 0), 8, "n_hashes", INVALID);
    create(
        &with(|c| c.q_cluster_size = 0),
        8,
        "q_cluster_size",
        INVALID,
    );
    create(&with(|c| c.scale = f32::NAN), 8, "scale", INVALID);
    create(&with(|c| c.scale = -0.5), 8, "scale", INVALID);
    create(&with(|c| c.scale = f32::INFINITY), 8, "scale", INVALID);
    create(&with(|c| c.isa = 5), 8, "config.isa: 5", INVALID);
    create(
        &with(|c| c.isa = u32::MAX),
        8,
        "is not a smyrf_isa",
        INVALID,
    );
    create(
        &with(|c| c.num_threads = 100_000),
        8,
        "num_threads",
        INVALID,
    );
    create(&base, 0, "head_dim", INVALID);
    let foreign = if cfg!(target_arch = "x86_64") {
        smyrf_isa::SMYRF_ISA_NEON
    } else {
        smyrf_isa::SMYRF_ISA_AVX2
    };
    let mut c = base;
    c.isa = foreign as u32;
    create(
        &c,
        8,
        "not supported",
        smyrf_status::SMYRF_ERROR_UNSUPPORTED_ISA,
    );

    let mut out = untouched;
    // SAFETY: NULL config is refused before use.
    let status = unsafe { smyrf_plan_create(null(), 8, &mut out) };
    check(status, NULL, "config is NULL", out);
    // SAFETY: NULL out_plan is refused before use.
    let status = unsafe { smyrf_plan_create(&base, 8, null_mut()) };
    assert_eq!(status, NULL);
    assert!(last_error().contains("out_plan is NULL"));

    // Projections: NULL, wrong lengths, misaligned, NULL config / out_plan.
    let a = vec![0.5f32; 64];
    let expected_len = (8 + 2) * 2;
    for (ptr, len, needle, status) in [
        (null(), expected_len, "projections is NULL", NULL),
        (
            a.as_ptr(),
            expected_len - 1,
            "must hold (head_dim + 2) * n_hashes = 20",
            INVALID,
        ),
        (a.as_ptr(), expected_len + 1, "got 21", INVALID),
        (a.as_ptr(), 0, "got 0", INVALID),
        (
            a.as_ptr().cast::<u8>().wrapping_add(1).cast(),
            expected_len,
            "not aligned",
            INVALID,
        ),
    ] {
        let mut out = untouched;
        // SAFETY: each pointer is NULL, misaligned (refused) or covers `len` floats of `a`.
        let got = unsafe { smyrf_plan_create_with_projections(&base, 8, ptr, len, &mut out) };
        check(got, status, needle, out);
    }
    let mut out = untouched;
    // SAFETY: NULL config is refused before use.
    let got = unsafe {
        smyrf_plan_create_with_projections(null(), 8, a.as_ptr(), expected_len, &mut out)
    };
    check(got, NULL, "config is NULL", out);
    // SAFETY: NULL out_plan is refused before use.
    let got = unsafe {
        smyrf_plan_create_with_projections(&base, 8, a.as_ptr(), expected_len, null_mut())
    };
    assert_eq!(got, NULL);
    let mut out = untouched;
    let bad = with(|c| c.n_hashes = 0);
    // SAFETY: valid pointers; the config is refused.
    let got =
        unsafe { smyrf_plan_create_with_projections(&bad, 8, a.as_ptr(), expected_len, &mut out) };
    check(got, INVALID, "n_hashes", out);
}

#[test]
fn bad_plan_queries_are_refused() {
    let plan = create_plan(&smyrf_config_default(), 8);
    let mut buf = vec![SENTINEL; 40];
    for (plan, ptr, len, needle, expected) in [
        (null(), buf.as_mut_ptr(), 20, "plan is NULL", NULL),
        (plan.cast_const(), null_mut(), 20, "out is NULL", NULL),
        (plan.cast_const(), buf.as_mut_ptr(), 19, "got 19", INVALID),
        (plan.cast_const(), buf.as_mut_ptr(), 40, "got 40", INVALID),
    ] {
        // SAFETY: pointers are NULL (refused) or cover `len` floats of `buf`.
        let status = unsafe { smyrf_plan_projections(plan, ptr, len) };
        let message = last_error();
        assert_eq!(status, expected, "{message}");
        assert!(message.contains(needle), "`{message}` lacks `{needle}`");
        assert!(buf.iter().all(|&x| x == SENTINEL));
    }
    let mut bytes = 7usize;
    for (plan, nq, nk, dv, out, needle, expected) in [
        (
            null(),
            8,
            8,
            8,
            &mut bytes as *mut usize,
            "plan is NULL",
            NULL,
        ),
        (
            plan.cast_const(),
            8,
            8,
            8,
            null_mut(),
            "out_bytes is NULL",
            NULL,
        ),
        (
            plan.cast_const(),
            0,
            8,
            8,
            &mut bytes as *mut usize,
            "q_seq_len",
            INVALID,
        ),
        (
            plan.cast_const(),
            8,
            0,
            8,
            &mut bytes as *mut usize,
            "k_seq_len",
            INVALID,
        ),
        (
            plan.cast_const(),
            8,
            8,
            0,
            &mut bytes as *mut usize,
            "v_dim",
            INVALID,
        ),
        (
            plan.cast_const(),
            usize::MAX,
            8,
            8,
            &mut bytes as *mut usize,
            "q_seq_len",
            INVALID,
        ),
    ] {
        // SAFETY: pointers are NULL (refused) or valid.
        let status = unsafe { smyrf_plan_scratch_bytes(plan, nq, nk, dv, out) };
        let message = last_error();
        assert_eq!(status, expected, "{message}");
        assert!(message.contains(needle), "`{message}` lacks `{needle}`");
        assert_eq!(bytes, 7);
    }
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

// ---------------------------------------------------------------------------------------
// Versioned structs, element types and the call arguments

/// A config's bytes at `size`, in a buffer of `size.max(full)` bytes (aligned), with `extra`
/// written past this library's layout.
fn sized_config(config: smyrf_config, size: usize, extra: &[(usize, u8)]) -> Vec<u64> {
    let full = std::mem::size_of::<smyrf_config>();
    let mut words = vec![0u64; size.max(full).div_ceil(8)];
    // SAFETY: the buffer holds at least `full` bytes, aligned for the struct.
    unsafe { words.as_mut_ptr().cast::<smyrf_config>().write(config) };
    // SAFETY: within the buffer.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    bytes[..8].copy_from_slice(&size.to_ne_bytes());
    if size < full {
        // An older caller's struct has nothing past its size: garbage there must not be read.
        bytes[size.max(8)..full].fill(0xA5);
    }
    for &(at, value) in extra {
        bytes[at] = value;
    }
    words
}

fn create_with(words: &[u64]) -> (smyrf_status, *mut smyrf_plan) {
    let mut plan = null_mut();
    // SAFETY: the buffer holds the struct_size bytes it claims.
    let status = unsafe { smyrf_plan_create(words.as_ptr().cast(), 8, &mut plan) };
    (status, plan)
}

#[test]
fn config_sizes_of_older_and_newer_callers() {
    let full = std::mem::size_of::<smyrf_config>();
    let mut config = smyrf_config_default();
    config.n_sinks = 3; // lies past the oldest layout: an older caller cannot set it
    config.q_cluster_size = 16;
    let reference = Fixture::new(2, 4, 2, 40, 8);
    let run = |plan: *mut smyrf_plan| {
        let mut f = reference.clone();
        assert_eq!(f.run(plan), smyrf_status::SMYRF_OK, "{}", last_error());
        // SAFETY: destroyed once.
        unsafe { smyrf_plan_destroy(plan) };
        f.out
    };
    // The oldest layout takes the defaults (§8 off) for everything past `isa`.
    let (status, plan) = create_with(&sized_config(config, SMYRF_CONFIG_MIN_SIZE, &[]));
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    let mut older = smyrf_config_default();
    older.q_cluster_size = 16;
    assert!(same_bits(&run(plan), &run(create_plan(&older, 8))));
    // The layout that ends at `bf16_exact` takes the selection's defaults (off).
    let mut selecting = config;
    selecting.n_selected = 9;
    let ends_at_bf16 = std::mem::offset_of!(smyrf_config, bf16_exact) + 4;
    let (status, plan) = create_with(&sized_config(selecting, ends_at_bf16, &[]));
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(same_bits(&run(plan), &run(create_plan(&config, 8))));
    let selected = run(create_plan(&selecting, 8));
    assert!(!same_bits(&selected, &run(create_plan(&config, 8))));
    // The layout that ends at `select_dims` takes the key blocks' default (off), so a call
    // that is not causal runs; the full layout turns them on, which such a call refuses.
    let mut blocking = config;
    blocking.n_blocks = 2;
    let ends_at_select = std::mem::offset_of!(smyrf_config, select_dims) + 4;
    let (status, plan) = create_with(&sized_config(blocking, ends_at_select, &[]));
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(same_bits(&run(plan), &run(create_plan(&config, 8))));
    let plan = create_plan(&blocking, 8);
    let mut f = reference.clone();
    assert_eq!(f.run(plan), smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("n_blocks needs a causal call"),
        "{}",
        last_error()
    );
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
    let mut reserved = config;
    reserved.reserved = 1;
    let (status, plan) = create_with(&sized_config(reserved, full, &[]));
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(plan.is_null());
    assert!(
        last_error().contains("config.reserved must be 0"),
        "{}",
        last_error()
    );
    // A newer caller whose extra bytes are zero is this layout.
    let (status, plan) = create_with(&sized_config(config, full + 24, &[]));
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(same_bits(&run(plan), &run(create_plan(&config, 8))));
    // Refused, nothing written: sizes that are no layout, and a newer option set.
    let newer_byte = format!("byte {} is set", full + 3);
    for (size, extra, text) in [
        (0, vec![], "config->struct_size = 0"),
        (SMYRF_CONFIG_MIN_SIZE - 4, vec![], "struct_size = 36"),
        (SMYRF_CONFIG_MIN_SIZE + 8, vec![], "a released layout"),
        (1 << 20, vec![], "at most 4096"),
        (full + 8, vec![(full + 3, 1u8)], newer_byte.as_str()),
    ] {
        let words = if size > 4096 {
            sized_config(config, 64, &[])
        } else {
            sized_config(config, size, &extra)
        };
        let mut words = words;
        if size > 4096 {
            // SAFETY: within the buffer.
            unsafe { words.as_mut_ptr().cast::<usize>().write(size) };
        }
        let (status, plan) = create_with(&words);
        assert_eq!(
            status,
            smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT,
            "size {size}"
        );
        assert!(plan.is_null());
        assert!(
            last_error().contains(text),
            "{} should say {text}",
            last_error()
        );
    }
}

#[test]
fn tensor_descriptors_need_their_whole_size_and_a_known_dtype() {
    let mut f = Fixture::new(1, 2, 1, 24, 8);
    let plan = create_plan(&smyrf_config_default(), 8);
    type Edit = fn(&mut Args);
    let cases: [(&str, Edit); 4] = [
        ("q->struct_size = 72", |a| {
            a.q.as_mut().unwrap().struct_size = 72
        }),
        ("out->struct_size = 0", |a| {
            a.out.as_mut().unwrap().struct_size = 0
        }),
        ("k->dtype: 3 is not a smyrf_dtype", |a| {
            a.k.as_mut().unwrap().dtype = 3
        }),
        ("out->dtype: 99", |a| a.out.as_mut().unwrap().dtype = 99),
    ];
    for (text, edit) in cases {
        let mut args = f.args();
        edit(&mut args);
        assert_eq!(args.call(plan), smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
        assert!(
            last_error().contains(text),
            "{} should say {text}",
            last_error()
        );
        assert!(f.out.iter().all(|&x| x == SENTINEL));
    }
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

/// `n` tasks run in order on the calling thread: an engine with one worker.
unsafe extern "C" fn serial_parallel_for(
    context: *mut std::ffi::c_void,
    n: usize,
    task: smyrf_task_fn,
    task_context: *mut std::ffi::c_void,
) {
    // SAFETY: the context is the counter the test passed.
    unsafe { *context.cast::<usize>() += 1 };
    let task = task.expect("the library passes its task");
    for i in 0..n {
        // SAFETY: the library's task with its context, each index once.
        unsafe { task(task_context, i) };
    }
}

#[test]
fn half_precision_lengths_sinks_and_an_engine_through_the_c_abi() {
    use half::f16;
    let (b, hq, hkv, n, d) = (2, 4, 2, 48, 8);
    let fixture = Fixture::new(b, hq, hkv, n, d);
    let k16: Vec<f16> = fixture.k.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = fixture.v.iter().map(|&x| f16::from_f32(x)).collect();
    let lengths = [48i32, 17];
    let sinks = [0.25f32, -1.0, f32::NEG_INFINITY, 2.0];
    let mut config = smyrf_config_default();
    config.q_cluster_size = 16;
    config.num_threads = 1;
    let plan = create_plan(&config, d);
    let rust = Plan::new(Config::default().q_cluster_size(16).num_threads(1), d).unwrap();
    let mut want = vec![f16::ZERO; b * n * hq * d];
    let mut want_lse = vec![0.0f32; b * hq * n];
    rust.attention_with(
        &TensorView::bnhd(&fixture.q, b, hq, n, d).unwrap(),
        &TensorView::bnhd(&k16, b, hkv, n, d).unwrap(),
        &TensorView::bnhd(&v16, b, hkv, n, d).unwrap(),
        &mut TensorViewMut::bnhd(&mut want, b, hq, n, d).unwrap(),
        smyrf::CallOptions::new()
            .key_lengths(&[48, 17])
            .head_sinks(&sinks)
            .lse(&mut want_lse),
    )
    .unwrap();
    let q = smyrf_tensor_bnhd(fixture.q.as_ptr().cast(), 0, b, hq, n, d);
    let k = smyrf_tensor_bnhd(k16.as_ptr().cast(), 1, b, hkv, n, d);
    let v = smyrf_tensor_bnhd(v16.as_ptr().cast(), 1, b, hkv, n, d);
    let mut got = vec![f16::from_f32(SENTINEL); want.len()];
    let mut lse = vec![SENTINEL; want_lse.len()];
    let out = smyrf_tensor_mut_bnhd(got.as_mut_ptr().cast(), 1, b, hq, n, d);
    let mut calls = 0usize;
    let mut args = smyrf_call_args_default();
    args.key_lengths = lengths.as_ptr();
    args.head_sinks = sinks.as_ptr();
    args.lse_out = lse.as_mut_ptr();
    for engine in [false, true] {
        if engine {
            args.parallel_for = Some(serial_parallel_for);
            args.parallel_context = (&mut calls as *mut usize).cast();
            args.parallel_workers = 1;
        }
        // SAFETY: every pointer covers the extent its shape names.
        let status = unsafe { smyrf_attention(plan, &q, &k, &v, &out, &args) };
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "engine {engine}"
        );
        assert!(same_bits(&lse, &want_lse));
    }
    assert!(calls > 0, "the engine ran the call");

    // Refused, nothing written.
    let untouched = got.clone();
    let check = |args: &smyrf_call_args, text: &str| {
        // SAFETY: as above.
        let status = unsafe { smyrf_attention(plan, &q, &k, &v, &out, args) };
        assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT, "{text}");
        assert!(
            last_error().contains(text),
            "{} should say {text}",
            last_error()
        );
    };
    let mut bad = args;
    bad.parallel_workers = 0;
    check(&bad, "parallel_workers must be at least 1");
    let (negative, above) = ([48i32, -1], [49i32, 0]);
    let mut bad = args;
    bad.key_lengths = negative.as_ptr();
    check(&bad, "key_lengths[1] = -1");
    bad.key_lengths = above.as_ptr();
    check(&bad, "key_lengths[0] = 49");
    let nan = [0.0f32, f32::NAN, 0.0, 0.0];
    let mut bad = args;
    bad.head_sinks = nan.as_ptr();
    check(&bad, "head_sinks[1]");
    let mut bad = args;
    bad.struct_size = SMYRF_CALL_ARGS_MIN_SIZE - 8;
    check(&bad, "args->struct_size = 32");
    // 16-bit data one byte off its alignment.
    let misaligned = smyrf_tensor_bnhd(
        k16.as_ptr().cast::<u8>().wrapping_add(1).cast(),
        1,
        b,
        hkv,
        n - 1,
        d,
    );
    // SAFETY: the misaligned pointer is refused before use.
    let status = unsafe { smyrf_attention(plan, &q, &misaligned, &v, &out, &args) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("k is not aligned to 2 bytes"),
        "{}",
        last_error()
    );
    assert!(got
        .iter()
        .zip(&untouched)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn a_workspace_through_the_c_abi() {
    let (b, hq, hkv, n, d) = (2, 4, 2, 40, 8);
    let mut fixture = Fixture::new(b, hq, hkv, n, d);
    let mut config = smyrf_config_default();
    config.q_cluster_size = 8;
    config.num_threads = 1;
    let plan = create_plan(&config, d);
    let rust = Plan::new(Config::default().q_cluster_size(8).num_threads(1), d).unwrap();
    let (q, k, v, mask) = (
        fixture.q.clone(),
        fixture.k.clone(),
        fixture.v.clone(),
        fixture.mask.clone(),
    );
    let mut calls = 0usize;
    for (engine, dense) in [(false, false), (true, false), (true, true)] {
        let mut args = fixture.args().call_args();
        if engine {
            args.parallel_for = Some(serial_parallel_for);
            args.parallel_context = (&mut calls as *mut usize).cast();
            args.parallel_workers = 3;
        }
        // The size from descriptors without data, as the Rust API gives it.
        let no_data = |heads| smyrf_tensor_bnhd(null(), 0, b, heads, n, d);
        let (tq, tk, tv) = (no_data(hq), no_data(hkv), no_data(hkv));
        let to = smyrf_tensor_mut_bnhd(null_mut(), 0, b, hq, n, d);
        let mut bytes = 0usize;
        // SAFETY: valid descriptors (their data is not read), args and out pointer.
        let status = unsafe {
            match dense {
                false => smyrf_plan_workspace_size(plan, &tq, &tk, &tv, &to, &args, &mut bytes),
                true => smyrf_dense_workspace_size(&tq, &tk, &tv, &to, &args, &mut bytes),
            }
        };
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
        let mut out = vec![0.0f32; fixture.out.len()];
        let (qv, kv) = (
            TensorView::bnhd(&q, b, hq, n, d).unwrap(),
            TensorView::bnhd(&k, b, hkv, n, d).unwrap(),
        );
        let vv = TensorView::bnhd(&v, b, hkv, n, d).unwrap();
        let ov = TensorViewMut::bnhd(&mut out, b, hq, n, d).unwrap();
        struct Three;
        impl smyrf::ParallelFor for Three {
            fn workers(&self) -> usize {
                3
            }
            fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
                (0..n).for_each(task)
            }
        }
        let mut options = smyrf::CallOptions::new();
        if engine {
            options = options.parallel_for(&Three);
        }
        let want = match dense {
            false => rust.workspace_size(&qv, &kv, &vv, &ov, &options),
            true => rust.dense_workspace_size(&qv, &kv, &vv, &ov, &options),
        };
        assert_eq!(bytes, want.unwrap(), "engine {engine}, dense {dense}");

        // Bitwise the call without one, from a workspace at an odd address.
        let call = |fixture: &mut Fixture, args: &smyrf_call_args| {
            fixture.out.fill(SENTINEL);
            fixture.lse.fill(SENTINEL);
            let a = fixture.args();
            let (tq, tk, tv, to) = (a.q.unwrap(), a.k.unwrap(), a.v.unwrap(), a.out.unwrap());
            // SAFETY: every pointer covers the extent its shape names.
            unsafe {
                match dense {
                    false => smyrf_attention(plan, &tq, &tk, &tv, &to, args),
                    true => smyrf_dense_attention(&tq, &tk, &tv, 0.0, &to, args),
                }
            }
        };
        assert_eq!(call(&mut fixture, &args), smyrf_status::SMYRF_OK);
        let (want_out, want_lse) = (fixture.out.clone(), fixture.lse.clone());
        let mut memory = vec![0u8; bytes + 5];
        args.workspace = memory[5..].as_mut_ptr().cast();
        args.workspace_size = bytes;
        assert_eq!(
            call(&mut fixture, &args),
            smyrf_status::SMYRF_OK,
            "{}",
            last_error()
        );
        assert!(same_bits(&fixture.out, &want_out) && same_bits(&fixture.lse, &want_lse));

        // Refused, nothing written: one byte short, NULL with a size, overlaps.
        let refused = |fixture: &mut Fixture, args: &smyrf_call_args, status, text: &str| {
            assert_eq!(call(fixture, args), status, "{text}: {}", last_error());
            assert!(
                last_error().contains(text),
                "{} should say {text}",
                last_error()
            );
            assert!(fixture
                .out
                .iter()
                .chain(&fixture.lse)
                .all(|&x| x == SENTINEL));
        };
        let mut bad = args;
        bad.workspace_size = bytes - 1;
        let text = format!(
            "workspace holds {} bytes but the call needs {bytes}",
            bytes - 1
        );
        refused(&mut fixture, &bad, INVALID, &text);
        let mut bad = args;
        bad.workspace = null_mut();
        refused(
            &mut fixture,
            &bad,
            NULL,
            "args->workspace (with workspace_size",
        );
        let mut bad = args;
        bad.workspace = fixture.out.as_mut_ptr().wrapping_add(3).cast();
        bad.workspace_size = 64;
        refused(&mut fixture, &bad, INVALID, "workspace overlaps out");
        bad.workspace = fixture.lse.as_mut_ptr().cast();
        refused(&mut fixture, &bad, INVALID, "workspace overlaps lse_out");
        bad.workspace = fixture.q.as_mut_ptr().cast();
        refused(&mut fixture, &bad, INVALID, "workspace overlaps q");
        bad.workspace = fixture.mask.as_mut_ptr().cast();
        bad.workspace_size = 1;
        refused(&mut fixture, &bad, INVALID, "workspace overlaps key_mask");
        assert!(fixture.mask == mask);
    }
    assert!(calls > 0);

    // The size queries refuse what the call would, and NULL pointers.
    let args = smyrf_call_args_default();
    let t = |heads, len| smyrf_tensor_bnhd(null(), 0, b, heads, len, d);
    let to = smyrf_tensor_mut_bnhd(null_mut(), 0, b, hq, n, d);
    let mut bytes = 0usize;
    let query = |plan: *const smyrf_plan,
                 q: &smyrf_tensor,
                 args: &smyrf_call_args,
                 out_bytes: *mut usize| {
        // SAFETY: valid or NULL pointers; descriptor data is never read.
        unsafe { smyrf_plan_workspace_size(plan, q, &t(hkv, n), &t(hkv, n), &to, args, out_bytes) }
    };
    assert_eq!(query(null(), &t(hq, n), &args, &mut bytes), NULL);
    assert_eq!(query(plan, &t(hq, n), &args, null_mut()), NULL);
    assert!(
        last_error().contains("out_bytes is NULL"),
        "{}",
        last_error()
    );
    assert_eq!(query(plan, &t(hq, n + 1), &args, &mut bytes), INVALID);
    assert!(last_error().contains("out.seq_len"), "{}", last_error());
    assert_eq!(query(plan, &t(hq, 0), &args, &mut bytes), INVALID);
    let mut bad_dtype = t(hq, n);
    bad_dtype.dtype = 7;
    assert_eq!(query(plan, &bad_dtype, &args, &mut bytes), INVALID);
    let mut no_workers = args;
    no_workers.parallel_for = Some(serial_parallel_for);
    assert_eq!(query(plan, &t(hq, n), &no_workers, &mut bytes), INVALID);
    assert!(
        last_error().contains("parallel_workers"),
        "{}",
        last_error()
    );
    assert_eq!(bytes, 0, "a refused query wrote its result");
    // A caller of the first released layout (through `lse_out`) has no workspace fields:
    // it gets the plan's scratch.
    let mut older = fixture.args().call_args();
    older.struct_size = SMYRF_CALL_ARGS_MIN_SIZE;
    let a = fixture.args();
    let (tq, tk, tv, to) = (a.q.unwrap(), a.k.unwrap(), a.v.unwrap(), a.out.unwrap());
    // SAFETY: every pointer covers the extent its shape names.
    let status = unsafe { smyrf_attention(plan, &tq, &tk, &tv, &to, &older) };
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn causal_preset_mirrors_the_rust_preset_and_needs_a_layout_with_key_blocks() {
    let c = smyrf_config_causal(256);
    let r = smyrf::Config::causal(256);
    let narrow = |x: usize| x as u32;
    assert_eq!(
        (
            c.n_hashes,
            c.q_cluster_size,
            c.n_sinks,
            c.window,
            c.n_samples,
            c.n_blocks,
            c.block_size
        ),
        (
            narrow(r.n_hashes),
            narrow(r.q_cluster_size),
            narrow(r.n_sinks),
            narrow(r.window),
            narrow(r.n_samples),
            narrow(r.n_blocks),
            narrow(r.block_size)
        )
    );
    assert!(c.n_blocks > 0 && c.window > 0, "the preset selects blocks");
    let full = std::mem::size_of::<smyrf_config>();
    let mut words = vec![0u64; full.div_ceil(8)];
    let older = std::mem::offset_of!(smyrf_config, select_dims) + 4;
    // SAFETY: the buffer holds `full` writable, aligned bytes.
    let status = unsafe { smyrf_config_causal_init(words.as_mut_ptr().cast(), older, 256) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(last_error().contains("n_blocks"), "{}", last_error());
    assert!(
        words.iter().all(|&w| w == 0),
        "a refused preset wrote the struct"
    );
    // SAFETY: as above.
    let status = unsafe { smyrf_config_causal_init(words.as_mut_ptr().cast(), full, 256) };
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    // SAFETY: the initialiser wrote a whole struct there.
    let written = unsafe { words.as_ptr().cast::<smyrf_config>().read() };
    assert_eq!(written, c);
}
