"""smyrf.torch: the same bits as the numpy path and the C library, zero copy, bf16, GQA,
key masks, the custom op under torch.compile, and bad input."""

import re
import time

import numpy as np
import pytest
import torch

import smyrf
import smyrf.torch as st
from conftest import oracle


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def test_same_bits_as_numpy_and_zero_copy():
    b, n, h, d = 2, 128, 4, 16
    # [B, N, H, D] tensors viewed as [B, H, N, D], as SDPA callers pass them.
    q, k, v = (rand(b, n, h, d, seed=s).transpose(1, 2) for s in range(3))
    assert not q.is_contiguous()
    desc = st._desc(q)
    assert desc[0] == q.data_ptr() and desc[3] == q.stride()
    plan = smyrf.Plan(d, q_cluster_size=16, n_hashes=3)
    out = st.attention(q, k, v, plan=plan)
    assert out.shape == (b, h, n, d) and out.dtype == torch.float32
    want = plan.attention(q.numpy(), k.numpy(), v.numpy())
    assert out.numpy().tobytes() == want.tobytes()
    contiguous = st.attention(q.contiguous(), k.contiguous(), v.contiguous(), plan=plan)
    assert torch.equal(out, contiguous)
    # plan=None is smyrf.Plan(D) with defaults.
    default = smyrf.Plan(d).attention(q.numpy(), k.numpy(), v.numpy())
    assert st.attention(q, k, v).numpy().tobytes() == default.tobytes()


def test_scale_overrides_the_plan():
    q, k, v = (rand(1, 2, 64, 8, seed=s) for s in range(3))
    plan = smyrf.Plan(8, q_cluster_size=16)
    got = st.attention(q, k, v, scale=0.5, plan=plan)
    want = smyrf.Plan(8, q_cluster_size=16, scale=0.5).attention(q.numpy(), k.numpy(), v.numpy())
    assert got.numpy().tobytes() == want.tobytes()
    assert not torch.equal(got, st.attention(q, k, v, plan=plan))


def test_dense_matches_oracle_and_sdpa():
    q, k, v = (rand(2, 4, 48, 16, seed=s) for s in range(3))
    mask = torch.rand(2, 48, generator=torch.Generator().manual_seed(4)) < 0.7
    got = st.dense_attention(q, k, v, attn_mask=mask, scale=0.3)
    want, _ = oracle(q.numpy(), k.numpy(), v.numpy(), 0.3, mask.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[:, None, None, :], scale=0.3
    )
    torch.testing.assert_close(got, sdpa, rtol=1e-5, atol=1e-5)


def test_bf16_equals_c_abi_and_oracle(clib):
    q, k, v = (rand(2, 2, 64, 16, dtype=torch.bfloat16, seed=s) for s in range(3))
    plan = smyrf.Plan(16, q_cluster_size=16)
    out = st.attention(q, k, v, plan=plan)
    assert out.dtype == torch.bfloat16
    bits = [x.view(torch.int16).numpy().view(np.uint16) for x in (q, k, v)]
    ref = np.empty((2, 2, 64, 16), dtype=np.uint16)
    clib.attention(*bits, ref, q_cluster_size=16, dtypes=("bf16",) * 4)
    assert out.view(torch.int16).numpy().view(np.uint16).tobytes() == ref.tobytes()
    # bf16_exact widens to f32: the f32 call on the widened values, rounded to bf16.
    exact = st.attention(q, k, v, plan=smyrf.Plan(16, q_cluster_size=16, bf16_exact=True))
    wide = st.attention(q.float(), k.float(), v.float(), plan=plan)
    assert torch.equal(exact, wide.to(torch.bfloat16))
    dense = st.dense_attention(q, k, v)
    want, _ = oracle(q.float().numpy(), k.float().numpy(), v.float().numpy())
    np.testing.assert_allclose(dense.float().numpy(), want, rtol=2e-2, atol=2e-2)


def test_f16_and_mixed_types():
    q = rand(1, 2, 64, 16, seed=1)
    k, v = (rand(1, 2, 64, 16, dtype=torch.float16, seed=s) for s in (2, 3))
    out = st.attention(q.half(), k, v)
    assert out.dtype == torch.float16
    wide = st.attention(q.half().float(), k.float(), v.float())
    assert torch.equal(out, wide.half())
    mixed = st.attention(q, k, v)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, st.attention(q, k.float(), v.float()))


def test_gqa():
    q = rand(2, 8, 64, 16, seed=1)
    k, v = (rand(2, 2, 64, 16, seed=s) for s in (2, 3))
    plan = smyrf.Plan(16, q_cluster_size=16)
    got = st.attention(q, k, v, enable_gqa=True, plan=plan)
    rep = [x.repeat_interleave(4, dim=1) for x in (k, v)]
    assert torch.equal(got, st.attention(q, *rep, plan=plan))
    dense = st.dense_attention(q, k, v, enable_gqa=True)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(dense, sdpa, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        st.attention(q, k, v)


def test_key_masks_in_both_forms():
    q, k, v = (rand(2, 2, 64, 16, seed=s) for s in range(3))
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[0, 40:] = False
    mask[1, ::3] = False
    plan = smyrf.Plan(16, q_cluster_size=16)
    flat = st.attention(q, k, v, mask, plan=plan)
    assert torch.equal(flat, st.attention(q, k, v, mask[:, None, None, :], plan=plan))
    want = plan.attention(q.numpy(), k.numpy(), v.numpy(), key_mask=mask.numpy())
    assert flat.numpy().tobytes() == want.tobytes()
    assert not torch.equal(flat, st.attention(q, k, v, plan=plan))
    lengths = torch.tensor([40, 64])
    by_length = st.attention(q, k, v, plan=plan, key_lengths=lengths)
    prefix = torch.arange(64)[None, :] < lengths[:, None]
    assert torch.equal(by_length, st.attention(q, k, v, prefix, plan=plan))
    sinks = torch.tensor([0.5, -1.0])
    got = st.dense_attention(q, k, v, mask, key_lengths=lengths, head_sinks=sinks)
    ref, _ = oracle(q.numpy(), k.numpy(), v.numpy(), None, mask.numpy(), lengths.numpy(), sinks.numpy())
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_causal_matches_numpy_and_sdpa():
    q = rand(2, 4, 40, 16, seed=1)
    k, v = (rand(2, 2, 100, 16, seed=s) for s in (2, 3))
    plan = smyrf.Plan(16, q_cluster_size=8, n_hashes=2)
    for offset in (None, 0, 25):
        got = st.attention(q, k, v, enable_gqa=True, plan=plan, causal=True, query_offset=offset)
        want = plan.attention(q.numpy(), k.numpy(), v.numpy(), causal=True, query_offset=offset)
        assert got.numpy().tobytes() == want.tobytes()
    # SDPA's is_causal puts query 0 at key 0: query_offset=0.
    dense = st.dense_attention(q, k, v, enable_gqa=True, causal=True, query_offset=0)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=True
    )
    torch.testing.assert_close(dense, sdpa, rtol=1e-5, atol=1e-5)
    bottom_right = st.dense_attention(q, k, v, enable_gqa=True, causal=True)
    mask = torch.ones(40, 100, dtype=torch.bool).tril(diagonal=60)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=True
    )
    torch.testing.assert_close(bottom_right, sdpa, rtol=1e-5, atol=1e-5)
    compiled = torch.compile(
        lambda q, k, v: st.attention(q, k, v, enable_gqa=True, plan=plan, causal=True),
        fullgraph=True,
    )
    assert torch.equal(compiled(q, k, v), st.attention(q, k, v, enable_gqa=True, plan=plan, causal=True))


def test_custom_op_under_torch_compile():
    q, k, v = (rand(1, 2, 128, 16, seed=s) for s in range(3))
    mask = torch.ones(1, 128, dtype=torch.bool)
    mask[0, 100:] = False
    plan = smyrf.Plan(16, q_cluster_size=32, seed=2**64 - 5)

    def f(q, k, v, mask):
        return st.attention(q, k, v, mask, plan=plan) + st.dense_attention(q, k, v, mask)

    eager = f(q, k, v, mask)
    start = time.perf_counter()
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(q, k, v, mask), eager)
    assert time.perf_counter() - start < 60
    # The ops are real graph nodes, and their fake implementation gives the output shape.
    graph = torch.fx.experimental.proxy_tensor.make_fx(f, tracing_mode="fake")(q, k, v, mask)
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert {"smyrf.attention.default", "smyrf.dense_attention.default"} <= targets
    torch.library.opcheck(
        torch.ops.smyrf.dense_attention.default, (q, k, v, None, None, None, False, None, None)
    )


def _bad_calls():
    q, k, v = (rand(2, 2, 32, 16, seed=s) for s in range(3))
    yield dict(query=q.double()), TypeError, "query: dtype torch.float64 is not supported"
    yield dict(key=k.to("meta")), ValueError, "key: tensor is on meta"
    yield dict(value=v[0]), ValueError, "value must have 4 dimensions"
    yield dict(key=k.numpy()), TypeError, "key: expected a torch.Tensor"
    yield dict(key=torch.cat([k, k], 3)[..., ::2]), ValueError, "k: the last axis must be contiguous"
    yield dict(key=k[..., :8].contiguous()), ValueError, "k.dim (must equal q.dim)"
    yield dict(value=v[:, :, :31]), ValueError, "v.seq_len (must equal k.seq_len)"
    yield dict(attn_mask=torch.ones(2, 32)), TypeError, "attn_mask: dtype torch.float32"
    yield dict(attn_mask=torch.ones(2, 2, 32, 32, dtype=torch.bool)), ValueError, "attn_mask must be a key mask"
    yield dict(key_lengths=torch.tensor([33, 2])), ValueError, "key_lengths[0] = 33"
    yield dict(key_lengths=torch.tensor([1.0, 2.0])), TypeError, "key_lengths: dtype"
    yield dict(head_sinks=torch.tensor([0.0, float("nan")])), ValueError, "head_sinks[1] = NaN"
    yield dict(head_sinks=torch.tensor([1, 2])), TypeError, "head_sinks: dtype"


@pytest.mark.parametrize("entry", ["attention", "dense_attention"])
def test_bad_input_raises(entry):
    q, k, v = (rand(2, 2, 32, 16, seed=s) for s in range(3))
    fn = getattr(st, entry)
    for change, exc, message in _bad_calls():
        args = dict(query=q, key=k, value=v)
        args.update(change)
        before = [t.clone() for t in (q, k, v)]
        with pytest.raises(exc, match=re.escape(message)):
            fn(**args)
        assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v)))
    if entry == "attention":
        with pytest.raises(ValueError, match="plan was built for head dim 8"):
            fn(q, k, v, plan=smyrf.Plan(8))
        with pytest.raises(TypeError, match="plan: expected a smyrf.Plan"):
            fn(q, k, v, plan={"n_hashes": 2})
