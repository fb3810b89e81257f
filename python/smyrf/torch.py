"""PyTorch entry: SMYRF and dense attention on CPU tensors, shaped like
``torch.nn.functional.scaled_dot_product_attention``.

Tensors are ``[B, H, N, D]`` float32, float16 or bfloat16 CPU tensors with any
non-negative strides whose last dimension is contiguous; they are read in place (no copy)
and the output is a new ``[B, Hq, Nq, Dv]`` tensor of the query's dtype. Both entries are
``torch.library`` custom ops (``smyrf::attention``, ``smyrf::dense_attention``) with fake
implementations, so ``torch.compile`` and tracing see them as single nodes. There is no
autograd formula: these are inference kernels.

Zero copy: each tensor goes to the compiled module as (data pointer, dtype, sizes,
element strides, storage byte range). The module checks the strides, the alignment, that
every element the view reaches lies inside that storage range, and that the output shares
no byte with an input, before it builds any slice. That is sound because the tensors are
live arguments of the op, referenced by this frame for the whole call.
"""

from typing import Optional

import torch

from . import Plan, _cached_plan, _smyrf

__all__ = ["attention", "dense_attention", "decode", "index_append"]

_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
# The Rust defaults, read once, so that a call with plan=None touches no compiled code
# before the op (which keeps it traceable).
_DEFAULT_CONFIG = Plan(1).config


def _desc(t):
    storage = t.untyped_storage()
    start = storage.data_ptr()
    return (
        t.data_ptr(),
        _DTYPES[t.dtype],
        tuple(t.shape),
        tuple(t.stride()),
        start,
        start + storage.nbytes(),
    )


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name}: tensor is on {t.device}; smyrf runs on CPU tensors only")
    if t.dtype not in _DTYPES:
        raise TypeError(
            f"{name}: dtype {t.dtype} is not supported (float32, float16 or bfloat16)"
        )
    if t.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions [B, H, N, D], got {t.dim()}")


def _check_inputs(query, key, value, enable_gqa):
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, t)
    if not enable_gqa and query.shape[1] != key.shape[1]:
        raise ValueError(
            f"query has {query.shape[1]} heads and key {key.shape[1]}: "
            "pass enable_gqa=True for grouped-query attention"
        )


def _key_mask(attn_mask, query, key):
    """A boolean ``[B, Nk]`` or ``[B, 1, 1, Nk]`` key mask as contiguous uint8 ``[B, Nk]``."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool:
        raise TypeError(
            f"attn_mask: dtype {attn_mask.dtype} is not supported (a boolean key mask, "
            "True = attend)"
        )
    if attn_mask.device.type != "cpu":
        raise ValueError(f"attn_mask: tensor is on {attn_mask.device}; CPU tensors only")
    b, nk = query.shape[0], key.shape[2]
    if tuple(attn_mask.shape) not in ((b, nk), (b, 1, 1, nk)):
        raise ValueError(
            f"attn_mask must be a key mask of shape [B, Nk] = [{b}, {nk}] or "
            f"[B, 1, 1, Nk], got {list(attn_mask.shape)}"
        )
    return attn_mask.reshape(b, nk).to(torch.uint8).contiguous()


def _key_lengths(key_lengths):
    if key_lengths is None:
        return None
    t = torch.as_tensor(key_lengths)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"key_lengths: dtype {t.dtype} is not an integer type")
    if t.dim() != 1:
        raise ValueError(f"key_lengths must have shape [B], got {list(t.shape)}")
    return t.to(device="cpu", dtype=torch.int64)


def _head_sinks(head_sinks):
    if head_sinks is None:
        return None
    t = torch.as_tensor(head_sinks)
    if not t.dtype.is_floating_point:
        raise TypeError(f"head_sinks: dtype {t.dtype} is not a float type")
    if t.dim() != 1:
        raise ValueError(f"head_sinks must have shape [Hq], got {list(t.shape)}")
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _query_offset(offset):
    if offset is None:
        return None
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"query_offset: expected an int, got {type(offset).__name__}")
    return offset


def _extras(key_mask, key_lengths, head_sinks):
    return (
        None if key_mask is None else key_mask.reshape(-1).numpy(),
        None if key_lengths is None else key_lengths.tolist(),
        None if head_sinks is None else head_sinks.numpy(),
    )


def _output(query, value):
    return torch.empty(
        query.shape[:3] + value.shape[3:], dtype=query.dtype, device=query.device
    )


def _call(method, query, key, value, key_mask, key_lengths, head_sinks, causal, query_offset):
    """Runs a plan's ``method`` on the tensors into a new output of query's dtype."""
    out = _output(query, value)
    method(
        _desc(query),
        _desc(key),
        _desc(value),
        _desc(out),
        *_extras(key_mask, key_lengths, head_sinks),
        False,
        causal,
        query_offset,
    )
    return out


@torch.library.custom_op("smyrf::attention", mutates_args=())
def _attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: Optional[torch.Tensor],
    key_lengths: Optional[torch.Tensor],
    head_sinks: Optional[torch.Tensor],
    causal: bool,
    query_offset: Optional[int],
    n_hashes: int,
    q_cluster_size: int,
    k_cluster_size: Optional[int],
    scale: Optional[float],
    seed: int,
    num_threads: int,
    isa: str,
    n_sinks: int,
    sink_selection: str,
    window: int,
    n_samples: int,
    sample_group: int,
    n_selected: int,
    select_dims: int,
    n_blocks: int,
    block_size: int,
    block_tile: int,
    bf16_exact: bool,
) -> torch.Tensor:
    config = dict(
        n_hashes=n_hashes,
        q_cluster_size=q_cluster_size,
        k_cluster_size=k_cluster_size,
        scale=scale,
        # Schema ints are int64: a u64 seed travels as its two's complement.
        seed=seed % (1 << 64),
        num_threads=num_threads,
        isa=isa,
        n_sinks=n_sinks,
        sink_selection=sink_selection,
        window=window,
        n_samples=n_samples,
        sample_group=sample_group,
        n_selected=n_selected,
        select_dims=select_dims,
        n_blocks=n_blocks,
        block_size=block_size,
        block_tile=block_tile,
        bf16_exact=bf16_exact,
    )
    plan = _cached_plan(query.shape[3], **config)
    return _call(
        plan._plan.attention,
        query,
        key,
        value,
        key_mask,
        key_lengths,
        head_sinks,
        causal,
        query_offset,
    )


@_attention_op.register_fake
def _(
    query,
    key,
    value,
    key_mask,
    key_lengths,
    head_sinks,
    causal,
    query_offset,
    n_hashes,
    q_cluster_size,
    k_cluster_size,
    scale,
    seed,
    num_threads,
    isa,
    n_sinks,
    sink_selection,
    window,
    n_samples,
    sample_group,
    n_selected,
    select_dims,
    n_blocks,
    block_size,
    block_tile,
    bf16_exact,
):
    return query.new_empty(query.shape[:3] + value.shape[3:])


@torch.library.custom_op("smyrf::dense_attention", mutates_args=())
def _dense_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: Optional[torch.Tensor],
    key_lengths: Optional[torch.Tensor],
    head_sinks: Optional[torch.Tensor],
    causal: bool,
    query_offset: Optional[int],
    scale: Optional[float],
) -> torch.Tensor:
    plan = _cached_plan(query.shape[3], n_hashes=1, scale=scale)
    return _call(
        plan._plan.dense_attention,
        query,
        key,
        value,
        key_mask,
        key_lengths,
        head_sinks,
        causal,
        query_offset,
    )


@_dense_op.register_fake
def _(query, key, value, key_mask, key_lengths, head_sinks, causal, query_offset, scale):
    return query.new_empty(query.shape[:3] + value.shape[3:])


def attention(
    query,
    key,
    value,
    attn_mask=None,
    scale=None,
    enable_gqa=False,
    *,
    plan=None,
    key_lengths=None,
    head_sinks=None,
    causal=False,
    query_offset=None,
):
    """SMYRF attention, with the arguments of ``scaled_dot_product_attention``.

    ``attn_mask``: a boolean key mask ``[B, Nk]`` or ``[B, 1, 1, Nk]``, True = attend.
    ``scale``: the logit scale (default: the plan's, else 1/sqrt(D)). ``enable_gqa``: allow
    fewer key/value heads than query heads (Hq a multiple of Hkv). ``plan``: a
    ``smyrf.Plan`` whose config is used (default ``smyrf.Plan(D)``); plans are cached by
    config. ``key_lengths``: integers ``[B]``. ``head_sinks``: ``[Hq]`` sink logits.
    ``causal``: query i sits at position ``query_offset + i`` and sees the keys at or
    before it; the default offset ``Nk - Nq`` aligns the last query with the last key
    (``scaled_dot_product_attention``'s ``is_causal`` aligns the first: ``query_offset=0``).
    Returns ``[B, Hq, Nq, Dv]`` of query's dtype.
    """
    _check_inputs(query, key, value, enable_gqa)
    if plan is None:
        config = dict(_DEFAULT_CONFIG)
    elif isinstance(plan, Plan):
        if plan.head_dim != query.shape[3]:
            raise ValueError(
                f"plan was built for head dim {plan.head_dim}, call has head dim "
                f"{query.shape[3]}"
            )
        config = plan.config
    else:
        raise TypeError(f"plan: expected a smyrf.Plan, got {type(plan).__name__}")
    if scale is not None:
        config["scale"] = float(scale)
    seed = config.pop("seed")
    return _attention_op(
        query,
        key,
        value,
        _key_mask(attn_mask, query, key),
        _key_lengths(key_lengths),
        _head_sinks(head_sinks),
        bool(causal),
        _query_offset(query_offset),
        seed=seed - (1 << 64) if seed >= 1 << 63 else seed,
        **config,
    )


def dense_attention(
    query,
    key,
    value,
    attn_mask=None,
    scale=None,
    enable_gqa=False,
    *,
    key_lengths=None,
    head_sinks=None,
    causal=False,
    query_offset=None,
):
    """Exact dense attention with the arguments of ``attention`` (no plan)."""
    _check_inputs(query, key, value, enable_gqa)
    return _dense_op(
        query,
        key,
        value,
        _key_mask(attn_mask, query, key),
        _key_lengths(key_lengths),
        _head_sinks(head_sinks),
        bool(causal),
        _query_offset(query_offset),
        None if scale is None else float(scale),
    )


def index_append(index, key, lengths):
    """Indexes each sequence's keys up to ``lengths[b]`` into the ``smyrf.KvIndex`` ``index``,
    read in place from the K cache tensor ``key`` ``[B, Hkv, >= lengths[b], D]``."""
    _check_tensor("key", key)
    index._index.append(_desc(key.detach()), [int(n) for n in lengths])


def decode(query, key, value, index, plan, head_sinks=None):
    """Decode through a ``smyrf.KvIndex`` (``smyrf.Plan.decode``) on CPU tensors: the Nq
    queries of each sequence (``query`` ``[B, Hq, Nq, D]``) sit at its last Nq indexed
    positions and attend to the K/V cache tensors ``key``, ``value``
    ``[B, Hkv, >= length, D]``, read in place. ``plan`` is the plan the index was built for.
    Returns ``[B, Hq, Nq, Dv]`` of query's dtype. Not a custom op: it reads the index, which
    appends change between calls, so it runs eagerly (inference, no autograd).
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(name, t)
    if not isinstance(plan, Plan):
        raise TypeError(f"plan: expected a smyrf.Plan, got {type(plan).__name__}")
    query, key, value = query.detach(), key.detach(), value.detach()
    out = query.new_empty(query.shape[:3] + value.shape[3:])
    sinks = _head_sinks(head_sinks)
    plan._plan.decode(
        index._index,
        _desc(query),
        _desc(key),
        _desc(value),
        _desc(out),
        None if sinks is None else sinks.numpy(),
        False,
    )
    return out
