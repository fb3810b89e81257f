//! The C ABI (design §2, §3): the committed header matches the generated one and documents
//! every item; bad calls through `smyrf::internals::ffi` return the right status with a message and
//! write nothing; good calls equal the Rust API bitwise; and the C and C++ examples, built
//! with strict warnings (and sanitizers where available) against the freshly built
//! `libsmyrf.so` / `libsmyrf.a`, run and reproduce the Rust API's results bit for bit.

mod common;
use common::Rng;
use smyrf::internals::ffi::*;
use smyrf::{gaussian_projections, Config, Isa, Plan, TensorView, TensorViewMut};
use std::ffi::CStr;
use std::ptr::{null, null_mut, NonNull};

const SENTINEL: f32 = -12345.0;

/// What `libsmyrf.a` needs from the system; README, the Makefile, `scripts/install.sh`
/// (smyrf.pc) and this test must agree (checked below).
const STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string that stays valid until the next
    // status-returning call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(smyrf_last_error_message()) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn c_str(ptr: *const std::ffi::c_char) -> &'static str {
    assert!(!ptr.is_null());
    // SAFETY: the library's static strings are NUL-terminated and live forever.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap()
}

fn create_plan(config: &smyrf_config, head_dim: usize) -> *mut smyrf_plan {
    let mut plan = null_mut();
    // SAFETY: valid config and out pointer.
    let status = unsafe { smyrf_plan_create(config, head_dim, &mut plan) };
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(!plan.is_null());
    plan
}

// ---------------------------------------------------------------------------------------
// Header

#[test]
fn committed_header_matches_generated_header() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/smyrf.h")).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("include/smyrf.h"))
        .unwrap_or_else(|e| format!("(cannot read include/smyrf.h: {e})"));
    assert!(
        generated == committed,
        "include/smyrf.h is out of date with src/ffi.rs; regenerate it with\n\n    \
         SMYRF_UPDATE_HEADER=1 cargo build --release\n\nand commit the result"
    );
}

/// The declarations of a cbindgen header (macros, types, fields, enum values, functions)
/// that do not come right after a doc comment, and how many declarations there are.
fn undocumented_declarations(header: &str) -> (usize, Vec<String>) {
    let lines: Vec<&str> = header.lines().map(str::trim).collect();
    let mut undocumented = Vec::new();
    let mut in_comment = false;
    let mut continues_declaration = false;
    let mut declarations = 0;
    for (i, line) in lines.iter().enumerate() {
        if in_comment || line.starts_with("/*") {
            in_comment = !line.ends_with("*/");
            continue;
        }
        let structural = line.is_empty()
            || line.starts_with("#if")
            || line.starts_with("#endif")
            || line.starts_with("#include")
            || line.starts_with("#define SMYRF_H")
            || line.starts_with('}')
            || line.starts_with('{')
            || line.starts_with(':')
            || line.starts_with("extern \"C\"")
            || (line.starts_with("typedef uint32_t") && lines[i - 1] == "#ifndef __cplusplus");
        if !structural && !continues_declaration {
            declarations += 1;
            if !lines[i - 1].ends_with("*/") {
                undocumented.push(line.to_string());
            }
        }
        // The parameter lines of a multi-line prototype belong to its first line.
        continues_declaration = line.ends_with(',') && line.contains('(')
            || continues_declaration && !line.ends_with(';');
    }
    (declarations, undocumented)
}

#[test]
fn header_documents_every_item() {
    let header = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    let (declarations, undocumented) = undocumented_declarations(&header);
    // 3 macros, 2 enums with 11 values, 4 types with 23 fields, 12 functions.
    assert!(
        declarations >= 55,
        "parsed only {declarations} declarations"
    );
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
    // The check notices a missing comment.
    let stripped = header.replacen("     * Hash rounds R, at least 1 (default 2).\n", "", 1);
    let stripped = stripped.replacen(
        "    /**\n     */\n    uint32_t n_hashes;",
        "    uint32_t n_hashes;",
        1,
    );
    assert_eq!(
        undocumented_declarations(&stripped).1,
        vec!["uint32_t n_hashes;".to_string()]
    );
    let lines: Vec<&str> = header.lines().map(str::trim).collect();
    for name in [
        "typedef struct smyrf_plan smyrf_plan;",
        "SMYRF_OK = 0,",
        "SMYRF_ERROR_PANIC = 5,",
        "SMYRF_ISA_AUTO = 0,",
        "SMYRF_ISA_NEON = 4,",
        "uint32_t isa;",
        "#ifndef SMYRF_H",
        "extern \"C\" {",
    ] {
        assert!(lines.contains(&name), "header lacks `{name}`");
    }
}

#[test]
fn version_string_and_macros_agree_with_the_package() {
    assert_eq!(c_str(smyrf_version()), env!("CARGO_PKG_VERSION"));
    let header = std::fs::read_to_string(repo_root().join("include/smyrf.h")).unwrap();
    for (macro_name, value) in [
        ("SMYRF_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("SMYRF_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("SMYRF_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define {macro_name} {value}");
        assert!(header.lines().any(|l| l == line), "header lacks `{line}`");
    }
}

#[test]
fn static_link_flags_are_documented_consistently() {
    for file in ["c_examples/Makefile", "scripts/install.sh", "README.md"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(
            text.contains(STATIC_LIBS),
            "{file} does not name `{STATIC_LIBS}`"
        );
    }
}

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
            c.sample_group
        ),
        (0, 0, 0, 0, 0)
    );
    // The design §8 fields were appended after `isa` (offset 32), keeping the layout of
    // the earlier fields.
    assert_eq!(std::mem::size_of::<smyrf_config>(), 56);
    assert_eq!(std::mem::size_of::<smyrf_tensor>(), 8 * 8);
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
        "smyrf_plan_create: config.n_hashes: must be at least 1"
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
        let (n, d) = (self.n, self.d);
        smyrf_tensor {
            data: data.as_ptr(),
            batch: self.b,
            heads,
            seq_len: n,
            dim: d,
            batch_stride: n * heads * d,
            head_stride: d,
            seq_stride: heads * d,
        }
    }

    fn args(&mut self) -> Args {
        let (n, d, hq) = (self.n, self.d, self.hq);
        Args {
            q: Some(self.tensor(&self.q, self.hq)),
            k: Some(self.tensor(&self.k, self.hkv)),
            v: Some(self.tensor(&self.v, self.hkv)),
            out: Some(smyrf_tensor_mut {
                data: self.out.as_mut_ptr(),
                batch: self.b,
                heads: hq,
                seq_len: n,
                dim: d,
                batch_stride: n * hq * d,
                head_stride: d,
                seq_stride: hq * d,
            }),
            mask: self.mask.as_ptr(),
            lse: self.lse.as_mut_ptr(),
            scale: 0.0,
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
}

fn opt_ptr<T>(value: &Option<T>) -> *const T {
    value.as_ref().map_or(null(), |v| v as *const T)
}

impl Args {
    fn call(&mut self, plan: *const smyrf_plan) -> smyrf_status {
        let out = self.out.as_mut().map_or(null_mut(), |o| o as *mut _);
        // SAFETY: every non-NULL pointer refers to a live fixture buffer of the extent its
        // (possibly deliberately wrong) shape claims, or the call must refuse it before use.
        unsafe {
            smyrf_attention(
                plan,
                opt_ptr(&self.q),
                opt_ptr(&self.k),
                opt_ptr(&self.v),
                self.mask,
                out,
                self.lse,
            )
        }
    }

    fn call_dense(&mut self) -> smyrf_status {
        let out = self.out.as_mut().map_or(null_mut(), |o| o as *mut _);
        // SAFETY: as in `call`.
        unsafe {
            smyrf_dense_attention(
                opt_ptr(&self.q),
                opt_ptr(&self.k),
                opt_ptr(&self.v),
                self.mask,
                self.scale,
                out,
                self.lse,
            )
        }
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
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
            data: k.data.cast_mut(),
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
        a.lse = a.v.unwrap().data.cast_mut()
    });
    expect_refusal(INVALID, "lse_out overlaps out", true, |a, _| {
        a.lse = a.out.unwrap().data
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
// The C and C++ examples, built and run against the freshly built library

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

#[cfg(target_os = "linux")]
mod native {
    use super::*;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// The libraries cargo built for this test run: `cargo test` compiles the library with
    /// all its crate types (rlib, cdylib, staticlib) next to the test executable in `deps/`.
    fn built_libraries() -> (PathBuf, PathBuf) {
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        for dir in [deps, deps.parent().unwrap()] {
            let (so, a) = (dir.join("libsmyrf.so"), dir.join("libsmyrf.a"));
            if so.is_file() && a.is_file() {
                return (so, a);
            }
        }
        panic!(
            "libsmyrf.so / libsmyrf.a not found next to {}",
            exe.display()
        );
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
        let target = std::env::current_exe().unwrap();
        let dir = target
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("c-abi-tests")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let lib = dir.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        let soname = format!("libsmyrf.so.{}", env!("CARGO_PKG_VERSION_MAJOR"));
        std::fs::copy(&so, lib.join(&soname)).unwrap();
        std::os::unix::fs::symlink(&soname, lib.join("libsmyrf.so")).unwrap();
        Work {
            dir,
            lib,
            static_lib: a,
        }
    }

    fn compiler(cpp: bool) -> cc::Tool {
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
        let mut cmd = compiler(cpp).to_command();
        cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" })
            .args(["-Wall", "-Wextra", "-Werror", "-pedantic"])
            // Bitwise comparison with Rust: no contraction of a*b+c into an FMA.
            .arg("-ffp-contract=off")
            .args(extra)
            .arg("-I")
            .arg(repo_root().join("include"))
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
    fn library_carries_its_soname() {
        let (so, _) = built_libraries();
        let output = match Command::new("readelf").arg("-d").arg(&so).output() {
            Ok(output) => output,
            Err(e) => {
                // The examples still prove it: they run with only libsmyrf.so.0 present.
                common::require::unavailable("readelf", &e.to_string());
                return;
            }
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let soname = format!(
            "Library soname: [libsmyrf.so.{}]",
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert!(text.contains(&soname), "{text}");
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

    /// Whether `-fsanitize=address,undefined` programs build and run here (they need the
    /// libasan/libubsan runtimes, and LeakSanitizer needs ptrace-like access).
    fn sanitizers_work(work: &Work) -> Result<(), String> {
        let source = work.dir.join("probe.c");
        std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
        let exe = work.dir.join("probe");
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

    #[test]
    fn examples_are_clean_under_address_and_undefined_sanitizers() {
        let work = work("sanitizers");
        if let Err(reason) = sanitizers_work(&work) {
            common::require::unavailable(
                "asan",
                &format!("-fsanitize=address,undefined does not work here: {reason}"),
            );
            return;
        }
        let flags = [
            "-O1",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ];
        let basic = build(&work, "basic.c", Link::Shared, &flags, "basic");
        check_basic(&work, &basic);
        let fixed = build(&work, "basic.c", Link::Static, &flags, "basic-static");
        check_basic(&work, &fixed);
        let engine = build(&work, "engine.cpp", Link::Shared, &flags, "engine");
        check_engine(&work, &engine);
    }

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    fn sh(cmd: &mut Command) -> String {
        let output = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
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
}
