"""SMYRF attention (arXiv:2010.05315) and exact dense attention on CPU.

Arrays are ``[B, H, N, D]`` numpy arrays of float32 or float16 with any non-negative
strides whose last axis is contiguous, so a ``[B, N, H, D]`` array passed as
``x.transpose(0, 2, 1, 3)`` is read in place. The PyTorch entry is ``smyrf.torch``.
"""

import numpy as np

from . import _smyrf

__all__ = ["Plan", "KvIndex", "dense_attention", "detected_isa", "active_isa", "__version__"]

__version__ = _smyrf.__version__
detected_isa = _smyrf.detected_isa
active_isa = _smyrf.active_isa


def _is_4d(x):
    return isinstance(x, np.ndarray) and x.ndim == 4


def _output(q, v, out):
    """``out`` as given, or a new ``[B, Hq, Nq, Dv]`` array of q's dtype."""
    if out is not None:
        return out
    for name, x in (("q", q), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [B, H, N, D], got {x.ndim}")
    return np.empty(q.shape[:3] + (v.shape[3],), dtype=q.dtype)


def _key_mask(mask, q, k):
    """A ``[B, Nk]`` bool/uint8 mask as the flat uint8 bytes the library takes."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_ and m.dtype != np.uint8:
        raise TypeError(f"key_mask: dtype {m.dtype} is not supported (bool or uint8)")
    if _is_4d(q) and _is_4d(k) and m.shape != (q.shape[0], k.shape[2]):
        raise ValueError(
            f"key_mask must have shape [B, Nk] = {(q.shape[0], k.shape[2])}, got {m.shape}"
        )
    return np.ascontiguousarray(m).view(np.uint8).reshape(-1)


def _key_lengths(lengths):
    if lengths is None:
        return None
    a = np.asarray(lengths)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"key_lengths: dtype {a.dtype} is not an integer type")
    if a.ndim != 1:
        raise ValueError(f"key_lengths must have shape [B], got {a.shape}")
    return [int(x) for x in a]


def _head_sinks(sinks):
    if sinks is None:
        return None
    a = np.asarray(sinks)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"head_sinks: dtype {a.dtype} is not a float type")
    if a.ndim != 1:
        raise ValueError(f"head_sinks must have shape [Hq], got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _run(method, q, k, v, key_mask, key_lengths, head_sinks, out, return_lse, causal=False,
         query_offset=None):
    out = _output(q, v, out)
    lse = method(
        q,
        k,
        v,
        out,
        _key_mask(key_mask, q, k),
        _key_lengths(key_lengths),
        _head_sinks(head_sinks),
        return_lse,
        bool(causal),
        None if query_offset is None else int(query_offset),
    )
    return (out, lse) if return_lse else out


class Plan:
    """A SMYRF attention plan for one head dimension.

    ``Plan(head_dim, **config)`` takes every field of the Rust ``Config`` by name:
    ``n_hashes, q_cluster_size, k_cluster_size, scale, seed, num_threads, isa`` ("auto",
    "portable", "avx2", "avx512" or "neon"), ``n_sinks, sink_selection`` ("first" or
    "mean_query"), ``window, n_samples, sample_group, n_selected, select_dims, n_blocks,
    block_size, block_tile, bf16_exact``. A plan is built once
    (projection matrix, kernels, threads) and may be called from any number of threads.
    """

    __slots__ = ("_plan", "_config")

    def __init__(self, head_dim, **config):
        self._wrap(_smyrf.Plan(head_dim, config))

    def _wrap(self, plan):
        self._plan = plan
        # Kept on the Python side so that reading it (as smyrf.torch does) stays traceable.
        self._config = plan.config

    @classmethod
    def hybrid(cls, head_dim, key_budget, **overrides):
        """The hybrid preset for a budget of ``key_budget`` keys per query (half selected
        keys, half residual samples, clusters of one query), with any field overridden."""
        plan = cls.__new__(cls)
        plan._wrap(_smyrf.Plan.hybrid(head_dim, key_budget, overrides))
        return plan

    @classmethod
    def causal(cls, head_dim, key_budget, **overrides):
        """The causal preset for a budget of ``key_budget`` keys per query (sinks, a recent
        window and key blocks chosen by the Quest bound; see ``Config::causal``), with any
        field overridden. Its blocks serve causal calls only."""
        plan = cls.__new__(cls)
        plan._wrap(_smyrf.Plan.causal(head_dim, key_budget, overrides))
        return plan

    @property
    def head_dim(self):
        return self._plan.head_dim

    @property
    def isa(self):
        """The kernel tier the plan runs."""
        return self._plan.isa

    @property
    def scale(self):
        """The logit scale the plan applies: ``config["scale"]``, or 1/sqrt(head_dim)."""
        return self._plan.effective_scale

    @property
    def config(self):
        """Every config field by name (a new dict; ``Plan(head_dim, **config)`` rebuilds it)."""
        return dict(self._config)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"smyrf.Plan(head_dim={self.head_dim}, {fields}) [runs {self.isa}]"

    def attention(
        self,
        q,
        k,
        v,
        *,
        key_mask=None,
        key_lengths=None,
        head_sinks=None,
        out=None,
        return_lse=False,
        causal=False,
        query_offset=None,
    ):
        """SMYRF attention of q ``[B, Hq, Nq, D]`` over k ``[B, Hkv, Nk, D]`` and v
        ``[B, Hkv, Nk, Dv]`` (Hq a multiple of Hkv).

        ``key_mask``: bool/uint8 ``[B, Nk]``, true = attend. ``key_lengths``: integers
        ``[B]``, batch element b attends to its first ``key_lengths[b]`` keys.
        ``head_sinks``: ``[Hq]`` learned sink logits. ``out``: ``[B, Hq, Nq, Dv]``
        float32/float16 array to write (allocated with q's dtype when None). ``causal``:
        query i sits at position ``query_offset + i`` (default ``Nk - Nq``) and sees only
        the keys at or before it. Returns out, or ``(out, lse)`` with the float32
        ``[B, Hq, Nq]`` log-sum-exp when ``return_lse``. On error nothing is written to
        ``out``.
        """
        return _run(
            self._plan.attention, q, k, v, key_mask, key_lengths, head_sinks, out, return_lse,
            causal, query_offset,
        )

    def decode(self, index, q, k, v, *, head_sinks=None, out=None, return_lse=False):
        """Decode through a ``KvIndex``: the Nq queries of each sequence b (q
        ``[B, Hq, Nq, D]``) sit at its last Nq indexed positions and attend causally to
        those keys of the cache (k, v ``[B, Hkv, >= length, D]``) by the plan's sinks,
        window, key blocks and samples, as the causal prefill of those queries does, then by
        each hash round's keys nearest each query's hash. The plan must be the one the
        index was built for. Returns out, or ``(out, lse)``."""
        out = _output(q, v, out)
        lse = self._plan.decode(index._index, q, k, v, out, _head_sinks(head_sinks), return_lse)
        return (out, lse) if return_lse else out

    def dense_attention(
        self,
        q,
        k,
        v,
        *,
        key_mask=None,
        key_lengths=None,
        head_sinks=None,
        out=None,
        return_lse=False,
        causal=False,
        query_offset=None,
    ):
        """Exact dense attention with this plan's scale, tier and threads."""
        return _run(
            self._plan.dense_attention,
            q,
            k,
            v,
            key_mask,
            key_lengths,
            head_sinks,
            out,
            return_lse,
            causal,
            query_offset,
        )


class KvIndex:
    """The key-block bounds and per-round hash orders of a K cache ``[B, Hkv, capacity, D]``
    for ``Plan.decode`` (design §10): 4·D/block_size bytes per key with key blocks, 8 per
    hash round, no copy of K or V.

    ``KvIndex(plan, batch, kv_heads, capacity)`` starts empty; ``append(k, lengths)``
    indexes each sequence's keys up to ``lengths[b]`` from the cache ``k`` (the prompt's
    keys, then each new token's); positions go in order, within the capacity.
    """

    __slots__ = ("_index",)

    def __init__(self, plan, batch, kv_heads, capacity):
        self._index = _smyrf.KvIndex(plan._plan, batch, kv_heads, capacity)

    def append(self, k, lengths):
        """Indexes the keys of sequence b up to ``lengths[b]`` from ``k``."""
        self._index.append(k, _key_lengths(lengths))

    def reset(self, b):
        """Empties sequence ``b`` (a new sequence in that slot)."""
        self._index.reset(int(b))

    @property
    def lengths(self):
        """Keys indexed per sequence."""
        return list(self._index.lengths)

    @property
    def capacity(self):
        return self._index.capacity

    @property
    def memory_bytes(self):
        """Bytes the index holds."""
        return self._index.memory_bytes


_plans = {}


def _cached_plan(head_dim, **config):
    """One plan per (head dim, config): a plan keeps its scratch between calls, so the
    module-level entries (here and in ``smyrf.torch``) reuse theirs."""
    key = (head_dim,) + tuple(sorted(config.items()))
    plan = _plans.get(key)
    if plan is None:
        plan = Plan(head_dim, **config)
        _plans[key] = plan
    return plan


def dense_attention(
    q,
    k,
    v,
    *,
    scale=None,
    key_mask=None,
    key_lengths=None,
    head_sinks=None,
    out=None,
    return_lse=False,
    num_threads=0,
    causal=False,
    query_offset=None,
):
    """Exact softmax attention ``softmax(scale * q @ k^T) @ v``, with the arguments of
    ``Plan.attention``; ``scale`` defaults to 1/sqrt(D)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [B, H, N, D], got {x.ndim}")
    if scale is not None:
        scale = float(scale)
    plan = _cached_plan(q.shape[3], n_hashes=1, scale=scale, num_threads=num_threads)
    return plan.dense_attention(
        q,
        k,
        v,
        key_mask=key_mask,
        key_lengths=key_lengths,
        head_sinks=head_sinks,
        out=out,
        return_lse=return_lse,
        causal=causal,
        query_offset=query_offset,
    )
