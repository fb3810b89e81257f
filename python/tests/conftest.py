"""Shared helpers: an independent route into the library (its C ABI, through ctypes) and a
float64 numpy oracle of dense attention."""

import ctypes
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

c_size = ctypes.c_size_t
c_u32 = ctypes.c_uint32


class Config(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size),
        ("n_hashes", c_u32),
        ("q_cluster_size", c_u32),
        ("k_cluster_size", c_u32),
        ("scale", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("num_threads", c_u32),
        ("isa", c_u32),
        ("n_sinks", c_u32),
        ("sink_selection", c_u32),
        ("window", c_u32),
        ("n_samples", c_u32),
        ("sample_group", c_u32),
        ("bf16_exact", c_u32),
        ("n_selected", c_u32),
        ("select_dims", c_u32),
        ("n_blocks", c_u32),
        ("block_size", c_u32),
        ("block_tile", c_u32),
        ("reserved", c_u32),
    ]


class Tensor(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size),
        ("data", ctypes.c_void_p),
        ("dtype", c_u32),
        ("batch", c_size),
        ("heads", c_size),
        ("seq_len", c_size),
        ("dim", c_size),
        ("batch_stride", c_size),
        ("head_stride", c_size),
        ("seq_stride", c_size),
    ]


class CallArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_size),
        ("key_mask", ctypes.c_void_p),
        ("key_lengths", ctypes.c_void_p),
        ("head_sinks", ctypes.c_void_p),
        ("lse_out", ctypes.c_void_p),
        ("parallel_for", ctypes.c_void_p),
        ("parallel_context", ctypes.c_void_p),
        ("parallel_workers", c_u32),
        ("workspace", ctypes.c_void_p),
        ("workspace_size", c_size),
        ("causal", c_u32),
        ("query_offset", ctypes.c_uint64),
    ]


ISA = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3, "neon": 4}
SINKS = {"first": 0, "mean_query": 1}
C_DTYPE = {"float32": 0, "float16": 1, "bf16": 2}


class CLib:
    """libsmyrf.so, built by ``cargo build --release`` at the repository root."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        L = self.lib
        for name in ("smyrf_config_init", "smyrf_call_args_init"):
            getattr(L, name).argtypes = [ctypes.c_void_p, c_size]
            getattr(L, name).restype = c_u32
        for name in ("smyrf_config_hybrid_init", "smyrf_config_causal_init"):
            getattr(L, name).argtypes = [ctypes.c_void_p, c_size, c_u32]
            getattr(L, name).restype = c_u32
        L.smyrf_plan_create.argtypes = [ctypes.c_void_p, c_size, ctypes.c_void_p]
        L.smyrf_plan_create.restype = c_u32
        L.smyrf_plan_destroy.argtypes = [ctypes.c_void_p]
        L.smyrf_attention.argtypes = [ctypes.c_void_p] * 6
        L.smyrf_attention.restype = c_u32
        L.smyrf_dense_attention.argtypes = [ctypes.c_void_p] * 3 + [
            ctypes.c_float,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        L.smyrf_dense_attention.restype = c_u32
        L.smyrf_last_error_message.restype = ctypes.c_char_p

    def check(self, status):
        if status != 0:
            raise RuntimeError(self.lib.smyrf_last_error_message().decode())

    def config(self, hybrid=None, causal_preset=None, **fields):
        c = Config()
        if causal_preset is not None:
            self.check(
                self.lib.smyrf_config_causal_init(ctypes.byref(c), ctypes.sizeof(c), causal_preset)
            )
        elif hybrid is None:
            self.check(self.lib.smyrf_config_init(ctypes.byref(c), ctypes.sizeof(c)))
        else:
            self.check(
                self.lib.smyrf_config_hybrid_init(ctypes.byref(c), ctypes.sizeof(c), hybrid)
            )
        for key, value in fields.items():
            if key == "isa":
                value = ISA[value]
            elif key == "sink_selection":
                value = SINKS[value]
            elif value is None:
                value = 0
            setattr(c, key, value)
        return c

    @staticmethod
    def tensor(a, dtype=None):
        """A C descriptor of a contiguous array (``dtype`` names bf16 held as uint16)."""
        assert a.flags.c_contiguous
        t = Tensor()
        t.struct_size = ctypes.sizeof(t)
        t.data = a.ctypes.data
        t.dtype = C_DTYPE[dtype or a.dtype.name]
        t.batch, t.heads, t.seq_len, t.dim = a.shape
        h, n, d = a.shape[1:]
        t.batch_stride, t.head_stride, t.seq_stride = h * n * d, n * d, d
        return t

    def _args(self, key_mask, key_lengths, head_sinks, lse, causal=False, query_offset=None):
        args = CallArgs()
        self.check(self.lib.smyrf_call_args_init(ctypes.byref(args), ctypes.sizeof(args)))
        if causal:
            # smyrf_causal: 1 bottom-right (Nk - Nq), 2 at query_offset.
            args.causal = 1 if query_offset is None else 2
            args.query_offset = query_offset or 0
        keep = []
        for field, value, dtype in (
            ("key_mask", key_mask, np.uint8),
            ("key_lengths", key_lengths, np.int32),
            ("head_sinks", head_sinks, np.float32),
        ):
            if value is not None:
                arr = np.ascontiguousarray(np.asarray(value).astype(dtype))
                keep.append(arr)
                setattr(args, field, arr.ctypes.data)
        if lse is not None:
            args.lse_out = lse.ctypes.data
        return args, keep

    def attention(
        self,
        q,
        k,
        v,
        out,
        *,
        head_dim=None,
        hybrid=None,
        key_mask=None,
        key_lengths=None,
        head_sinks=None,
        lse=None,
        dtypes=(None, None, None, None),
        causal=False,
        query_offset=None,
        **config,
    ):
        """SMYRF attention through the C ABI into ``out`` (contiguous arrays)."""
        c = self.config(hybrid, **config)
        plan = ctypes.c_void_p()
        self.check(
            self.lib.smyrf_plan_create(
                ctypes.byref(c), head_dim or q.shape[3], ctypes.byref(plan)
            )
        )
        try:
            args, keep = self._args(
                key_mask, key_lengths, head_sinks, lse, causal, query_offset
            )
            ts = [self.tensor(a, d) for a, d in zip((q, k, v, out), dtypes)]
            self.check(
                self.lib.smyrf_attention(plan, *[ctypes.byref(t) for t in ts], ctypes.byref(args))
            )
        finally:
            self.lib.smyrf_plan_destroy(plan)

    def dense_attention(
        self,
        q,
        k,
        v,
        out,
        *,
        scale=0.0,
        key_mask=None,
        key_lengths=None,
        head_sinks=None,
        lse=None,
        dtypes=(None, None, None, None),
        causal=False,
        query_offset=None,
    ):
        args, keep = self._args(key_mask, key_lengths, head_sinks, lse, causal, query_offset)
        ts = [self.tensor(a, d) for a, d in zip((q, k, v, out), dtypes)]
        self.check(
            self.lib.smyrf_dense_attention(
                *[ctypes.byref(t) for t in ts[:3]], scale, ctypes.byref(ts[3]), ctypes.byref(args)
            )
        )


@pytest.fixture(scope="session")
def clib():
    path = pathlib.Path(os.environ.get("SMYRF_LIB", REPO / "target" / "release" / "libsmyrf.so"))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `cargo build --release` at the repository root "
            "(or set SMYRF_LIB)"
        )
    return CLib(path)


def oracle(q, k, v, scale=None, key_mask=None, key_lengths=None, head_sinks=None,
           query_offset=None):
    """Dense attention in float64: (out [B, Hq, Nq, Dv], lse [B, Hq, Nq]); causal when
    ``query_offset`` is given (query i at position ``query_offset + i``)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = hq // hkv
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    valid = np.ones((b, nk), dtype=bool)
    if key_mask is not None:
        valid &= np.asarray(key_mask, dtype=bool)
    if key_lengths is not None:
        valid &= np.arange(nk)[None, :] < np.asarray(key_lengths)[:, None]
    visible = valid[:, None, None, :]
    if query_offset is not None:
        positions = query_offset + np.arange(nq)
        visible = visible & (np.arange(nk)[None, :] <= positions[:, None])[None, None]
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    if head_sinks is not None:
        sinks = np.asarray(head_sinks, dtype=np.float64)[None, :, None, None]
        m = np.maximum(m, sinks)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    denom = e.sum(axis=-1, keepdims=True)
    if head_sinks is not None:
        denom = denom + np.exp(sinks - m)
    out = np.einsum("bhij,bhjd->bhid", e, v) / np.where(denom > 0, denom, 1.0)
    with np.errstate(divide="ignore"):  # a query that sees no key: lse -inf
        lse = (np.log(denom) + m)[..., 0]
    return out, lse


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)
