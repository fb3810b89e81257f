"""The numpy API against the C library (bitwise) and a float64 oracle."""

import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import smyrf
from conftest import REPO, oracle, randn

CONFIGS = [
    {},
    dict(n_hashes=3, q_cluster_size=16, seed=5),
    dict(n_hashes=1, q_cluster_size=8, k_cluster_size=24, scale=0.3),
    dict(n_hashes=2, q_cluster_size=16, n_sinks=4, window=8, n_samples=4, sample_group=8),
    dict(q_cluster_size=16, n_sinks=9, sink_selection="mean_query", num_threads=1),
    dict(n_hashes=2, q_cluster_size=8, n_sinks=2, window=6, n_selected=10, select_dims=5, n_samples=6),
]


def qkv(rng, b=2, hq=4, hkv=2, nq=96, nk=96, d=16, dv=8):
    return randn(rng, b, hq, nq, d), randn(rng, b, hkv, nk, d), randn(rng, b, hkv, nk, dv)


@pytest.mark.parametrize("config", CONFIGS)
def test_attention_equals_c_abi_bitwise(clib, config):
    rng = np.random.default_rng(0)
    q, k, v = qkv(rng)
    mask = rng.random((2, 96)) < 0.8
    lengths = np.array([90, 70])
    sinks = np.array([0.5, -np.inf, 1.0, -2.0], dtype=np.float32)
    out, lse = smyrf.Plan(16, **config).attention(
        q, k, v, key_mask=mask, key_lengths=lengths, head_sinks=sinks, return_lse=True
    )
    ref = np.empty_like(out)
    ref_lse = np.empty((2, 4, 96), dtype=np.float32)
    clib.attention(
        q, k, v, ref, key_mask=mask, key_lengths=lengths, head_sinks=sinks, lse=ref_lse, **config
    )
    assert out.tobytes() == ref.tobytes()
    assert lse.shape == (2, 4, 96) and lse.dtype == np.float32
    assert lse.tobytes() == ref_lse.tobytes()
    # Without options too: the plain call is its own path in the binding.
    plain = smyrf.Plan(16, **config).attention(q, k, v)
    clib.attention(q, k, v, ref, **config)
    assert plain.tobytes() == ref.tobytes()


def test_hybrid_equals_c_hybrid(clib):
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, hq=2, hkv=2)
    plan = smyrf.Plan.hybrid(16, 64, seed=3)
    c = clib.config(hybrid=64)
    for field in ("n_hashes", "q_cluster_size", "n_sinks", "window", "n_samples", "n_selected",
                  "select_dims"):
        assert plan.config[field] == getattr(c, field), field
    assert plan.config["n_selected"] == 32 and plan.config["n_samples"] == 32
    assert plan.config["seed"] == 3
    ref = np.empty((2, 2, 96, 8), dtype=np.float32)
    clib.attention(q, k, v, ref, hybrid=64, seed=3)
    assert plan.attention(q, k, v).tobytes() == ref.tobytes()


def test_dense_equals_c_abi_and_oracle(clib):
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, nq=40, nk=120)
    mask = rng.random((2, 120)) < 0.7
    lengths = [100, 120]
    sinks = np.array([0.1, 2.0, -np.inf, 0.0], dtype=np.float32)
    out, lse = smyrf.dense_attention(
        q, k, v, scale=0.2, key_mask=mask, key_lengths=lengths, head_sinks=sinks, return_lse=True
    )
    ref, ref_lse = np.empty_like(out), np.empty_like(lse)
    clib.dense_attention(
        q, k, v, ref, scale=0.2, key_mask=mask, key_lengths=lengths, head_sinks=sinks, lse=ref_lse
    )
    assert out.tobytes() == ref.tobytes() and lse.tobytes() == ref_lse.tobytes()
    want, want_lse = oracle(q, k, v, 0.2, mask, lengths, sinks)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", [None, 0, 30])
def test_causal_equals_c_abi_bitwise_and_the_oracle(clib, offset):
    rng = np.random.default_rng(12)
    q, k, v = qkv(rng, nq=40, nk=100)
    mask = rng.random((2, 100)) < 0.8
    mask[:, :4] = False  # the first queries at offset 0 see no key
    options = dict(key_mask=mask, causal=True, query_offset=offset)
    plan = smyrf.Plan(16, n_hashes=2, q_cluster_size=8)
    for call, c_call in ((plan.attention, clib.attention),
                         (plan.dense_attention, clib.dense_attention)):
        out, lse = call(q, k, v, return_lse=True, **options)
        ref, ref_lse = np.empty_like(out), np.empty_like(lse)
        if call == plan.attention:
            c_call(q, k, v, ref, lse=ref_lse, n_hashes=2, q_cluster_size=8, **options)
        else:
            c_call(q, k, v, ref, lse=ref_lse, **options)
        assert out.tobytes() == ref.tobytes() and lse.tobytes() == ref_lse.tobytes()
    # Dense against the float64 oracle, bottom-right by default.
    want, want_lse = oracle(q, k, v, key_mask=mask, query_offset=60 if offset is None else offset)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)
    # One cluster of SMYRF is causal dense attention.
    one = smyrf.Plan(16, n_hashes=1, q_cluster_size=1000).attention(q, k, v, **options)
    np.testing.assert_allclose(one, want, rtol=1e-5, atol=1e-5)


def test_causal_blocks_equal_c_abi_bitwise_and_cover_every_key_once(clib):
    rng = np.random.default_rng(13)
    q, k, v = qkv(rng, nq=96, nk=96)
    mask = rng.random((2, 96)) < 0.85
    config = dict(n_hashes=2, q_cluster_size=8, n_sinks=2, window=8, n_blocks=3, block_size=8,
                  n_samples=4)
    out, lse = smyrf.Plan(16, **config).attention(q, k, v, key_mask=mask, causal=True,
                                                   return_lse=True)
    ref, ref_lse = np.empty_like(out), np.empty_like(lse)
    clib.attention(q, k, v, ref, lse=ref_lse, key_mask=mask, causal=True, **config)
    assert out.tobytes() == ref.tobytes() and lse.tobytes() == ref_lse.tobytes()
    # Samples past the eligible count draw them all at weight one: exact causal attention.
    every = dict(config, n_samples=1000)
    got = smyrf.Plan(16, **every).attention(q, k, v, key_mask=mask, causal=True)
    want, _ = oracle(q, k, v, key_mask=mask, query_offset=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(out - want).max() > 1e-4  # the partial draw is an estimate


def test_causal_preset_equals_c_preset_and_refusals(clib):
    plan = smyrf.Plan.causal(16, 256, seed=3)
    c = clib.config(causal_preset=256)
    for field in ("n_hashes", "q_cluster_size", "n_sinks", "window", "n_samples", "n_blocks",
                  "block_size", "n_selected"):
        assert plan.config[field] == getattr(c, field), field
    assert plan.config["n_blocks"] > 0 and plan.config["seed"] == 3
    rng = np.random.default_rng(14)
    q, k, v = qkv(rng, nq=300, nk=300)
    ref = np.empty((2, 4, 300, 8), dtype=np.float32)
    clib.attention(q, k, v, ref, causal_preset=256, seed=3, causal=True)
    assert plan.attention(q, k, v, causal=True).tobytes() == ref.tobytes()
    with pytest.raises(ValueError, match="n_blocks needs a causal call"):
        plan.attention(q, k, v)
    with pytest.raises(ValueError, match="selected keys"):
        smyrf.Plan.hybrid(16, 8).attention(q, k, v, causal=True)


def test_one_cluster_is_dense_attention():
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, nq=50, nk=50)
    plan = smyrf.Plan(16, n_hashes=3, q_cluster_size=64)
    out, lse = plan.attention(q, k, v, return_lse=True)
    want, want_lse = oracle(q, k, v)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse + np.log(3), rtol=1e-5, atol=1e-5)


def test_clustered_attention_differs_from_dense():
    # Guards the oracle comparisons above against a binding that always ran dense attention.
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, nq=128, nk=128)
    out = smyrf.Plan(16, q_cluster_size=16).attention(q, k, v)
    assert np.abs(out - oracle(q, k, v)[0]).max() > 1e-3


def test_strided_views_read_in_place():
    rng = np.random.default_rng(5)
    b, n, h, d = 2, 256, 4, 32
    # [B, N, H, D] buffers, as a fused projection leaves them, viewed as [B, H, N, D].
    q = randn(rng, b, n, h, d).transpose(0, 2, 1, 3)
    kv = randn(rng, b, n, 2, h, d)
    k, v = kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous and not k.flags.c_contiguous
    plan = smyrf.Plan(d, q_cluster_size=32)
    want = plan.attention(*(np.ascontiguousarray(x) for x in (q, k, v)))
    out = np.empty((b, h, n, d), dtype=np.float32)
    plan.attention(q, k, v, out=out)  # warm: plan scratch is Rust memory, not traced
    tracemalloc.start()
    try:
        got = plan.attention(q, k, v, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got is out
    assert out.tobytes() == want.tobytes()
    # A copy of any input would be 256 KiB of numpy memory; the call makes none.
    assert peak < q.nbytes // 4, peak


def test_out_written_in_place_through_a_strided_view():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, hq=2, hkv=2)
    plan = smyrf.Plan(16, q_cluster_size=16)
    want = plan.attention(q, k, v)
    base = np.full((2, 96, 2, 8), 7.0, dtype=np.float32)  # [B, N, H, Dv]
    view = base.transpose(0, 2, 1, 3)
    assert plan.attention(q, k, v, out=view) is view
    assert np.shares_memory(view, base)
    assert base.transpose(0, 2, 1, 3).tobytes() == want.tobytes()


def test_f16_inputs_equal_f32_call_on_converted_values():
    rng = np.random.default_rng(7)
    q, k, v = (x.astype(np.float16) for x in qkv(rng))
    for plan in (smyrf.Plan(16, q_cluster_size=16), smyrf.Plan(16, n_sinks=2, window=4)):
        out16 = plan.attention(q, k, v)
        assert out16.dtype == np.float16
        out32 = plan.attention(*(x.astype(np.float32) for x in (q, k, v)))
        assert out16.tobytes() == out32.astype(np.float16).tobytes()
        # Mixed: f32 queries over an f16 K/V cache, f32 output.
        mixed = plan.attention(q.astype(np.float32), k, v)
        assert mixed.dtype == np.float32 and mixed.tobytes() == out32.tobytes()
    # A 16-bit output of f32 inputs is the f32 result rounded once.
    out = np.empty(q.shape[:3] + (8,), dtype=np.float16)
    plan.attention(*(x.astype(np.float32) for x in (q, k, v)), out=out)
    assert out.tobytes() == out32.astype(np.float16).tobytes()
    dense16 = smyrf.dense_attention(q, k, v)
    dense32 = smyrf.dense_attention(*(x.astype(np.float32) for x in (q, k, v)))
    assert dense16.tobytes() == dense32.astype(np.float16).tobytes()


def test_gqa_equals_repeated_heads():
    rng = np.random.default_rng(8)
    q, k, v = qkv(rng, hq=4, hkv=2)
    plan = smyrf.Plan(16, q_cluster_size=16)
    rep = [np.repeat(x, 2, axis=1) for x in (k, v)]
    assert plan.attention(q, k, v).tobytes() == plan.attention(q, *rep).tobytes()


def test_gil_is_released_during_a_call():
    rng = np.random.default_rng(9)
    # Dense attention at N = 4096: a call long enough (tenths of a second) to measure.
    q = randn(rng, 1, 1, 4096, 64)
    plan = smyrf.Plan(64, num_threads=1)
    out = np.empty_like(q)
    plan.dense_attention(q, q, q, out=out)
    start = time.perf_counter()
    plan.dense_attention(q, q, q, out=out)
    one_call = time.perf_counter() - start
    done = threading.Event()
    calls = 3

    def worker():
        for _ in range(calls):
            plan.dense_attention(q, q, q, out=out)
        done.set()

    # While the worker is inside the library, this thread keeps running Python. With the
    # GIL held, the longest gap between two ticks here would be a whole call.
    t = threading.Thread(target=worker)
    ticks = [time.perf_counter()]
    t.start()
    while not done.is_set():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    t.join()
    gap = max(np.diff(ticks))
    assert len(ticks) > 10
    assert gap < 0.5 * one_call, (gap, one_call)


def _bad_calls(rng):
    q, k, v = qkv(rng, hq=2, hkv=2, nq=32, nk=32)
    f64 = q.astype(np.float64)
    yield "dtype", dict(q=f64), TypeError, "q: dtype float64 is not supported"
    yield "byte order", dict(q=q.astype(">f4")), TypeError, "q: dtype >f4 is not in native byte order"
    yield "mask dtype", dict(key_mask=np.ones((2, 32), np.int32)), TypeError, "key_mask: dtype"
    yield "lengths dtype", dict(key_lengths=[1.5, 2.0]), TypeError, "key_lengths: dtype"
    yield "sinks dtype", dict(head_sinks=np.array([1, 2])), TypeError, "head_sinks: dtype"
    yield "not an array", dict(k=k.tolist()), TypeError, "k: expected a numpy array"
    yield "3-D", dict(k=k[0]), ValueError, "k must have 4 dimensions"
    yield "negative stride", dict(k=k[:, :, ::-1]), ValueError, "k: negative strides"
    yield "last axis", dict(k=np.concatenate([k, k], 3)[..., ::2]), ValueError, "k: the last axis"
    yield "head dim", dict(k=k[..., :8], q=q[..., :8].copy()), ValueError, "plan was built for head dim 16"
    yield "k dim", dict(k=np.ascontiguousarray(k[..., :8])), ValueError, "k.dim (must equal q.dim)"
    yield "heads", dict(k=np.concatenate([k, k[:, :1]], 1), v=np.concatenate([v, v[:, :1]], 1)), ValueError, "multiple of key/value heads"
    yield "length", dict(key_lengths=[33, 1]), ValueError, "key_lengths[0] = 33: must be in 0..=32"
    yield "negative length", dict(key_lengths=[3, -1]), ValueError, "key_lengths[1] = -1"
    yield "lengths count", dict(key_lengths=[3]), ValueError, "key_lengths length (batch)"
    yield "sink", dict(head_sinks=[0.0, np.nan]), ValueError, "head_sinks[1] = NaN"
    yield "sink count", dict(head_sinks=[0.0]), ValueError, "head_sinks length (q.heads)"
    yield "mask shape", dict(key_mask=np.ones((32, 2), bool)), ValueError, "key_mask must have shape"
    yield "zero size", dict(q=q[:, :, :0]), ValueError, "q.seq_len must be positive"
    yield "offset without causal", dict(query_offset=2), ValueError, "query_offset needs causal"
    yield "negative offset", dict(causal=True, query_offset=-1), ValueError, (
        "query_offset must be non-negative"
    )
    yield "queries before every key", dict(k=k[:, :, :16], v=v[:, :, :16], causal=True), (
        ValueError
    ), "would sit before key 0"


@pytest.mark.parametrize("dense", [False, True])
def test_bad_input_raises_and_leaves_out_untouched(dense):
    rng = np.random.default_rng(11)
    plan = smyrf.Plan(16, q_cluster_size=8)
    q, k, v = qkv(rng, hq=2, hkv=2, nq=32, nk=32)
    for what, change, exc, message in _bad_calls(rng):
        args = dict(q=q, k=k, v=v)
        args.update({n: change.pop(n) for n in ("q", "k", "v") if n in change})
        out = np.full((2, 2, 32, 8), 3.25, dtype=np.float32)
        call = plan.dense_attention if dense else plan.attention
        if dense and what == "head dim":
            continue  # dense attention takes any head dim
        with pytest.raises(exc, match=re.escape(message)):
            call(args["q"], args["k"], args["v"], out=out, **change)
        assert (out == 3.25).all(), what


def test_bad_out_raises_and_leaves_it_untouched():
    rng = np.random.default_rng(12)
    plan = smyrf.Plan(16)
    q, k, v = qkv(rng, hq=2, hkv=2, nq=32, nk=32)
    cases = [
        (np.full((2, 2, 31, 8), 3.25, np.float32), ValueError, "out.seq_len (must equal q.seq_len)"),
        (np.full((2, 2, 32, 8), 3.25, np.float64), TypeError, "out: dtype float64"),
        (np.full((2, 2, 32, 16), 3.25, np.float32)[..., ::2], ValueError, "out: the last axis"),
        (np.broadcast_to(np.float32(3.25), (2, 2, 32, 8)), ValueError, "out: the array is read-only"),
    ]
    for out, exc, message in cases:
        before = out.copy()
        with pytest.raises(exc, match=re.escape(message)):
            plan.attention(q, k, v, out=out)
        assert np.array_equal(out, before)
    # An output sharing memory with an input is refused, and the input stays as it was.
    qv = np.concatenate([q, np.zeros_like(q[..., :8])], axis=3)
    before = qv.copy()
    with pytest.raises(ValueError, match="out overlaps q"):
        plan.attention(qv[..., :16], k, v, out=qv[..., 16:])
    assert np.array_equal(qv, before)
    # Rows that overlap each other (a zero stride on a real axis) are the library's refusal.
    rows = np.lib.stride_tricks.as_strided(
        np.full(8, 3.25, np.float32), shape=(2, 2, 32, 8), strides=(0, 0, 0, 4)
    )
    with pytest.raises(ValueError, match="rows overlap"):
        plan.attention(q, k, v, out=rows)
    assert (rows == 3.25).all()


def test_window_needs_self_attention():
    rng = np.random.default_rng(13)
    q, k, v = qkv(rng, nq=16, nk=32)
    with pytest.raises(ValueError, match=re.escape("config.window needs self-attention")):
        smyrf.Plan(16, window=4).attention(q, k, v)


def test_config_errors():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_hash'"):
        smyrf.Plan(16, n_hash=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        smyrf.Plan.hybrid(16, 64, bogus=1)
    with pytest.raises(ValueError, match=re.escape("config.n_hashes: must be at least 1")):
        smyrf.Plan(16, n_hashes=0)
    with pytest.raises(ValueError, match=re.escape("config.scale: must not be negative")):
        smyrf.Plan(16, scale=-1.0)
    with pytest.raises(ValueError, match="num_threads must be a non-negative integer"):
        smyrf.Plan(16, num_threads=-1)
    with pytest.raises(TypeError, match="n_hashes must be a non-negative integer"):
        smyrf.Plan(16, n_hashes="2")
    with pytest.raises(ValueError, match="names no tier"):
        smyrf.Plan(16, isa="sse9")
    with pytest.raises(ValueError, match="sink_selection"):
        smyrf.Plan(16, sink_selection="last")
    with pytest.raises(TypeError, match="bf16_exact must be a bool"):
        smyrf.Plan(16, bf16_exact=1)
    with pytest.raises(ValueError, match="head_dim must be positive"):
        smyrf.Plan(0)


def test_plan_properties_round_trip():
    config = dict(
        n_hashes=3,
        q_cluster_size=16,
        k_cluster_size=20,
        scale=0.25,
        seed=2**64 - 1,
        num_threads=1,
        isa="portable",
        n_sinks=2,
        sink_selection="mean_query",
        window=6,
        n_samples=3,
        sample_group=5,
        bf16_exact=True,
        n_selected=4,
        select_dims=7,
        n_blocks=0,
        block_size=8,
        block_tile=3,
    )
    plan = smyrf.Plan(24, **config)
    assert plan.config == config
    assert plan.head_dim == 24 and plan.isa == "portable"
    assert plan.scale == 0.25
    assert smyrf.Plan(24, **plan.config).config == config
    text = repr(plan)
    assert "head_dim=24" in text and "sink_selection='mean_query'" in text and "portable" in text
    default = smyrf.Plan(64)
    assert default.config["k_cluster_size"] is None and default.config["isa"] == "auto"
    assert default.scale == np.float32(1 / 8)
    assert default.isa == smyrf.active_isa()


def test_isa_names_and_override():
    assert smyrf.detected_isa() in ("portable", "avx2", "avx512", "neon")
    code = "import smyrf; print(smyrf.active_isa(), smyrf.Plan(8).isa)"
    env = dict(os.environ, SMYRF_ISA="portable")
    got = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert got.stdout.split() == ["portable", "portable"]
    env["SMYRF_ISA"] = "nonsense"
    got = subprocess.run([sys.executable, "-c", "import smyrf; smyrf.active_isa()"], env=env, capture_output=True, text=True)
    assert got.returncode != 0 and "names no tier" in got.stderr


def test_version_is_the_library_version():
    text = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert smyrf.__version__ == version
    binding = (pathlib.Path(smyrf.__file__).parent.parent / "Cargo.toml")
    if binding.exists():
        assert f'version = "{version}"' in binding.read_text()


def test_numpy_api_needs_no_torch():
    code = "import sys, smyrf; smyrf.Plan(8); print('torch' in sys.modules)"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "False"


def test_decode_through_the_index_equals_the_causal_prefill():
    rng = np.random.default_rng(21)
    q, k, v = qkv(rng, b=1, nq=200, nk=200)
    plan = smyrf.Plan.causal(16, 64, block_tile=1, block_size=8)
    full = plan.attention(q, k, v, causal=True)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    index = smyrf.KvIndex(plan, 1, 2, 256)
    index.append(k, [150])
    index.append(k, [200])
    assert index.lengths == [200] and index.capacity == 256
    assert 0 < index.memory_bytes < k16.nbytes
    out, lse = plan.decode(index, q[:, :, -1:], k, v, return_lse=True)
    assert out.tobytes() == full[:, :, -1:].tobytes()
    assert lse.shape == (1, 4, 1) and np.isfinite(lse).all()
    # Over an f16 cache, the f16 prefill's bits.
    index16 = smyrf.KvIndex(plan, 1, 2, 200)
    index16.append(k16, [200])
    full16 = plan.attention(q, k16, v16, causal=True)
    assert (plan.decode(index16, q[:, :, -1:], k16, v16).tobytes()
            == full16[:, :, -1:].tobytes())
    with pytest.raises(ValueError, match="appended in order"):
        index.append(k, [10])
    with pytest.raises(ValueError, match="capacity"):
        index16.append(np.zeros((1, 2, 300, 16), np.float32), [250])
    with pytest.raises(ValueError, match="n_hashes"):
        smyrf.Plan(16, block_size=8, n_blocks=2).decode(index, q[:, :, -1:], k, v)
    # Hash rounds and samples: the index keeps each round's order; a round over the whole
    # middle completes sinks and window, so the decode is exact causal attention.
    whole = smyrf.Plan(16, n_hashes=1, k_cluster_size=1000, n_sinks=1, window=8, block_tile=1)
    hashed = smyrf.KvIndex(whole, 1, 2, 200)
    hashed.append(k16, [120])
    hashed.append(k16, [200])
    dense = whole.dense_attention(q[:, :, -1:], k16, v16, causal=True)
    np.testing.assert_allclose(
        whole.decode(hashed, q[:, :, -1:], k16, v16), dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="projection"):
        smyrf.Plan(16, n_hashes=1, k_cluster_size=1000, n_sinks=1, window=8, seed=5).decode(
            hashed, q[:, :, -1:], k16, v16)
    index.reset(0)
    assert index.lengths == [0]
