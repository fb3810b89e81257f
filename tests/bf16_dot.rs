//! Plans take the bf16 dot-product kernel only where it pays: elsewhere an all-bf16 call
//! gives the bits of the widened path (`bf16_exact`), where it pays other bits. Its own test
//! binary: `tests/engine.rs` forces the kernel on for the whole process.

mod common;

use common::bits::same_bits;
use common::Rng;
use half::bf16;
use smyrf::{Config, Plan, TensorView, TensorViewMut};

#[test]
fn plans_take_the_bf16_dot_product_kernel_only_where_it_pays() {
    let (h, n, d) = (2, 256, 64);
    let mut rng = Rng(5);
    let mut values =
        |len: usize| -> Vec<bf16> { (0..len).map(|_| bf16::from_f32(rng.uniform())).collect() };
    let (q, k, v) = (values(h * n * d), values(h * n * d), values(h * n * d));
    let call = |config: Config| -> (Vec<f32>, smyrf::Isa) {
        let plan = Plan::new(config.n_hashes(1).q_cluster_size(4096), d).unwrap();
        let mut out = vec![0.0f32; h * n * d];
        let view = |x| TensorView::bhnd(x, 1, h, n, d).unwrap();
        let mut o = TensorViewMut::bhnd(&mut out, 1, h, n, d).unwrap();
        plan.attention(&view(&q), &view(&k), &view(&v), &mut o)
            .unwrap();
        (out, plan.isa())
    };
    let (chosen, tier) = call(Config::default());
    let (exact, _) = call(Config::default().bf16_exact(true));
    let pays = smyrf::internals::bf16_dot::pays();
    match pays {
        Some(true) if tier == smyrf::Isa::Avx512 => {
            assert!(
                !same_bits(&chosen, &exact),
                "the kernel pays here but did not run"
            )
        }
        _ => assert!(
            same_bits(&chosen, &exact),
            "the kernel ran where it does not pay ({pays:?}, {tier})"
        ),
    }
}
