//! Every refusal of design §2 returns its typed error and leaves the output untouched.

mod common;
use common::*;
use smyrf::{Config, Error, Isa, Plan, Shape, TensorView, TensorViewMut};

struct Bufs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
}

fn bufs(len: usize) -> Bufs {
    let mut rng = Rng(1);
    Bufs {
        q: rng.vec(len),
        k: rng.vec(len),
        v: rng.vec(len),
        out: vec![SENTINEL; len],
    }
}

/// Runs SMYRF and dense attention on the given shapes; both must fail with `expected` and
/// leave `out` and `lse` untouched.
fn expect_call_error(
    qs: Shape,
    ks: Shape,
    vs: Shape,
    os: Shape,
    mask: Option<&[u8]>,
    lse_len: Option<usize>,
    expected: Error,
) {
    let mut b = bufs(4096);
    let plan = Plan::new(Config::default(), qs.dim.max(1)).unwrap();
    let mut lse = lse_len.map(|n| vec![SENTINEL; n]);
    let q = TensorView::new(&b.q, qs).unwrap();
    let k = TensorView::new(&b.k, ks).unwrap();
    let v = TensorView::new(&b.v, vs).unwrap();
    let mut out = TensorViewMut::new(&mut b.out, os).unwrap();
    let got = plan.attention_with(&q, &k, &v, &mut out, {
        let mut options = smyrf::CallOptions::new();
        options.key_mask = mask;
        options.lse = lse.as_deref_mut();
        options
    });
    assert_eq!(got, Err(expected.clone()));
    let got = smyrf::Plan::new(smyrf::Config::default(), q.shape().dim).and_then(|plan| {
        plan.dense_attention_with(&q, &k, &v, &mut out, {
            let mut options = smyrf::CallOptions::new();
            options.key_mask = mask;
            options.lse = lse.as_deref_mut();
            options
        })
    });
    if !matches!(expected, Error::HeadDimMismatch { .. }) {
        assert_eq!(got, Err(expected));
    }
    assert!(b.out.iter().all(|&x| x == SENTINEL), "output was written");
    if let Some(lse) = lse {
        assert!(lse.iter().all(|&x| x == SENTINEL), "lse was written");
    }
}

fn s(b: usize, h: usize, n: usize, d: usize) -> Shape {
    Shape::bhnd(b, h, n, d)
}

#[test]
fn inconsistent_shapes() {
    let ok = s(1, 2, 8, 4);
    let mm = |what, expected, found| Error::ShapeMismatch {
        what,
        expected,
        found,
    };
    expect_call_error(
        ok,
        s(2, 2, 8, 4),
        s(2, 2, 8, 4),
        ok,
        None,
        None,
        mm("k.batch (must equal q.batch)", 1, 2),
    );
    expect_call_error(
        ok,
        ok,
        s(2, 2, 8, 4),
        ok,
        None,
        None,
        mm("v.batch (must equal q.batch)", 1, 2),
    );
    expect_call_error(
        ok,
        s(1, 2, 8, 5),
        s(1, 2, 8, 4),
        ok,
        None,
        None,
        mm("k.dim (must equal q.dim)", 4, 5),
    );
    expect_call_error(
        ok,
        ok,
        s(1, 1, 8, 4),
        ok,
        None,
        None,
        mm("v.heads (must equal k.heads)", 2, 1),
    );
    expect_call_error(
        ok,
        ok,
        s(1, 2, 7, 4),
        ok,
        None,
        None,
        mm("v.seq_len (must equal k.seq_len)", 8, 7),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        s(1, 1, 8, 4),
        None,
        None,
        mm("out.heads (must equal q.heads)", 2, 1),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        s(1, 2, 9, 4),
        None,
        None,
        mm("out.seq_len (must equal q.seq_len)", 8, 9),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        s(1, 2, 8, 3),
        None,
        None,
        mm("out.dim (must equal v.dim)", 4, 3),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        s(2, 2, 8, 4),
        None,
        None,
        mm("out.batch (must equal q.batch)", 1, 2),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        ok,
        Some(&[1u8; 7]),
        None,
        mm("key_mask length (batch * k.seq_len)", 8, 7),
    );
    expect_call_error(
        ok,
        ok,
        ok,
        ok,
        None,
        Some(15),
        mm("lse length (batch * q.heads * q.seq_len)", 16, 15),
    );
}

#[test]
fn heads_not_divisible() {
    let q = s(1, 3, 8, 4);
    let kv = s(1, 2, 8, 4);
    expect_call_error(
        q,
        kv,
        kv,
        q,
        None,
        None,
        Error::HeadsNotDivisible {
            q_heads: 3,
            kv_heads: 2,
        },
    );
}

#[test]
fn head_dim_differs_from_plan() {
    let b = bufs(64);
    let plan = Plan::new(Config::default(), 8).unwrap();
    let v = TensorView::bhnd(&b.q, 1, 1, 16, 4).unwrap();
    let mut out_buf = vec![SENTINEL; 64];
    let mut out = TensorViewMut::bhnd(&mut out_buf, 1, 1, 16, 4).unwrap();
    assert_eq!(
        plan.attention(&v, &v, &v, &mut out),
        Err(Error::HeadDimMismatch { plan: 8, found: 4 })
    );
    assert!(out_buf.iter().all(|&x| x == SENTINEL));
}

#[test]
fn zero_sizes_overflow_and_out_of_bounds_views() {
    let data = vec![0.0f32; 64];
    assert_eq!(
        TensorView::bhnd(&data, 0, 1, 1, 1).unwrap_err(),
        Error::ZeroSize { what: "batch" }
    );
    assert_eq!(
        TensorView::bhnd(&data, 1, 1, 1, 0).unwrap_err(),
        Error::ZeroSize { what: "dim" }
    );
    assert_eq!(
        TensorView::bhnd(&data, 1, 0, 1, 1).unwrap_err(),
        Error::ZeroSize { what: "heads" }
    );
    assert_eq!(
        TensorView::bhnd(&data, 1, 1, 0, 1).unwrap_err(),
        Error::ZeroSize { what: "seq_len" }
    );
    assert!(matches!(
        TensorView::bhnd(&data, usize::MAX / 2, 4, 1, 1),
        Err(Error::SizeOverflow { .. })
    ));
    let huge = Shape {
        seq_stride: usize::MAX / 3,
        ..Shape::bhnd(1, 1, 4, 1)
    };
    assert!(matches!(
        TensorView::new(&data, huge),
        Err(Error::SizeOverflow { .. })
    ));
    assert_eq!(
        TensorView::bhnd(&data, 1, 1, 17, 4).unwrap_err(),
        Error::OutOfBounds {
            what: "view",
            needed: 68,
            len: 64
        }
    );
    let fits = Shape {
        seq_stride: 8,
        ..Shape::bhnd(1, 1, 8, 4)
    };
    assert!(TensorView::new(&data, fits).is_ok());
    let strided = Shape {
        seq_stride: 9,
        ..Shape::bhnd(1, 1, 8, 4)
    };
    assert_eq!(
        TensorView::new(&data, strided).unwrap_err(),
        Error::OutOfBounds {
            what: "view",
            needed: 67,
            len: 64
        }
    );
    let mut out = vec![0.0f32; 64];
    assert_eq!(
        TensorViewMut::bhnd(&mut out, 1, 1, 17, 4).unwrap_err(),
        Error::OutOfBounds {
            what: "out",
            needed: 68,
            len: 64
        }
    );
    let overlapping = Shape {
        seq_stride: 2,
        ..Shape::bhnd(1, 1, 8, 4)
    };
    assert_eq!(
        TensorViewMut::new(&mut out, overlapping).unwrap_err(),
        Error::OverlappingOutput
    );
    // Overlapping reads are fine (a broadcast key, say).
    let broadcast = Shape {
        seq_stride: 0,
        ..Shape::bhnd(1, 1, 8, 4)
    };
    assert!(TensorView::new(&data, broadcast).is_ok());
}

#[test]
fn invalid_configs() {
    let bad = |config: Config, field: &str| {
        let err = Plan::new(config, 8).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    };
    bad(Config::default().n_hashes(0), "n_hashes");
    bad(Config::default().n_hashes(5000), "n_hashes");
    bad(Config::default().q_cluster_size(0), "q_cluster_size");
    bad(Config::default().k_cluster_size(0), "k_cluster_size");
    bad(Config::default().scale(f32::NAN), "scale");
    bad(Config::default().scale(f32::INFINITY), "scale");
    bad(Config::default().scale(-1.0), "scale");
    bad(Config::default().num_threads(100_000), "num_threads");
    assert_eq!(
        Plan::new(Config::default(), 0).unwrap_err(),
        Error::ZeroSize { what: "head_dim" }
    );
    assert!(matches!(
        Plan::new(Config::default(), 1 << 20),
        Err(Error::InvalidConfig {
            field: "head_dim",
            ..
        })
    ));
    assert_eq!(
        Plan::with_projections(Config::default(), 8, &[0.0; 19]).unwrap_err(),
        Error::ProjectionLength {
            expected: 20,
            found: 19
        }
    );
    // Dense attention refuses a bad scale too, before touching the output.
    let data = vec![0.5f32; 16];
    let view = TensorView::bhnd(&data, 1, 1, 4, 4).unwrap();
    let mut out_buf = vec![SENTINEL; 16];
    let mut out = TensorViewMut::bhnd(&mut out_buf, 1, 1, 4, 4).unwrap();
    assert!(matches!(
        smyrf::Plan::new(smyrf::Config::default().scale(f32::NAN), view.shape().dim).and_then(
            |plan| plan.dense_attention_with(
                &view,
                &view,
                &view,
                &mut out,
                smyrf::CallOptions::new()
            )
        ),
        Err(Error::InvalidConfig { field: "scale", .. })
    ));
    assert!(out_buf.iter().all(|&x| x == SENTINEL));
}

#[test]
fn unsupported_isa_is_refused() {
    let missing = Isa::ALL
        .into_iter()
        .find(|isa| !isa.is_supported())
        .expect("some tier is foreign to every CPU");
    let err = Plan::new(Config::default().isa(missing), 8).unwrap_err();
    assert_eq!(err, Error::UnsupportedIsa { isa: missing });
    assert!(err.to_string().contains(missing.name()));
    let plan = Plan::new(Config::default().isa(Isa::Portable), 8).unwrap();
    assert_eq!(plan.isa(), Isa::Portable);
}

#[test]
fn error_messages_are_clear() {
    let msg = Error::HeadsNotDivisible {
        q_heads: 3,
        kv_heads: 2,
    }
    .to_string();
    assert!(msg.contains('3') && msg.contains('2') && msg.contains("multiple"));
    let msg = Error::OutOfBounds {
        what: "q",
        needed: 10,
        len: 5,
    }
    .to_string();
    assert!(msg.contains("10") && msg.contains('5'));
}
