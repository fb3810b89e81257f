"""Runs the attention layers of a Hugging Face ``transformers`` model through smyrf.

``patch(model, plan_or_config)`` registers one attention function per patched model in
transformers' attention registry (``AttentionInterface``) and points the model's
attention-implementation setting at it; no model code is copied or replaced. ``unpatch``
points the setting back and removes the function from the registry.

Encoders run non-causal attention with a key mask; decoders (Llama family, BERT as a
decoder) run causal attention with the last query aligned to the last key, which serves
both the prompt and generation with a K/V cache. The mask transformers builds is checked to
be exactly that (key padding, plus the causal pattern for causal modules); any other mask
(sliding windows, biases, per-head masks) is refused rather than approximated.
"""
import itertools
import time

import torch

from smyrf import KvIndex, Plan
from smyrf import torch as smyrf_torch

_PATCH_ATTRIBUTE = "_smyrf_patch"
_names = itertools.count()

# Architectures whose self-attention is causal even when a config does not say so.
_CAUSAL_ARCHITECTURE_HINTS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


class PatchState:
    """What ``patch`` changed on one model, and the attention time spent since.

    ``seconds`` and ``calls`` count every call of the patched attention function (mask
    conversion included), so a caller can time attention alone. ``observer``, when set, is
    called as ``observer(layer, query, key, value, scaling)`` with each call's inputs before
    attention runs (the eval tool captures decode inputs this way).
    """

    def __init__(self, name, previous, plan_for_layer, layer_of_module, decode_index=True):
        self.name = name
        self.previous = previous
        self.plan_for_layer = plan_for_layer
        self.layer_of_module = layer_of_module
        self.plans = {}
        self.decode_index = decode_index
        # Per layer: the KV-cache index of the generation in progress (see _decode_step).
        self.indexes = {}
        self.seconds = 0.0
        self.calls = 0
        self.observer = None

    def reset_timer(self):
        """Sets the attention time and call count back to zero."""
        self.seconds = 0.0
        self.calls = 0


def _registry():
    # Imported here so that the rest of smyrf works without transformers installed.
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return AttentionInterface, ALL_ATTENTION_FUNCTIONS


def _mask_registry():
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    except ImportError:
        return None, None
    return ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask


def _configs(model):
    """Every distinct config object of the model and its submodules."""
    seen = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


def _attention_modules(model):
    """The self-attention modules that call the registry, in layer order."""
    found = []
    for module in model.modules():
        if hasattr(module, "scaling") and hasattr(module, "config") and hasattr(module, "is_causal"):
            found.append(module)
    return found


def causal_reason(model):
    """Why ``model`` has causal attention, or None when nothing says it has."""
    for config in _configs(model):
        if getattr(config, "is_decoder", False):
            return f"its config ({type(config).__name__}) has is_decoder=True"
        if getattr(config, "is_encoder_decoder", False):
            return f"it is an encoder-decoder model ({type(config).__name__})"
        for arch in getattr(config, "architectures", None) or ():
            if any(hint in arch for hint in _CAUSAL_ARCHITECTURE_HINTS):
                return f"its architecture {arch} is a causal language model"
    for name, module in model.named_modules():
        if getattr(module, "is_causal", False) is True:
            return f"its attention module {name or type(module).__name__} has is_causal=True"
    if getattr(model, "can_generate", None) is not None:
        try:
            generates = model.can_generate()
        except Exception:  # some wrappers raise instead of answering
            generates = False
        if generates:
            return f"{type(model).__name__} is a generative model"
    return None


def _plan_source(plan_or_config):
    """Turns ``plan_or_config`` into ``(layer_index, head_dim) -> Plan | None``."""
    if isinstance(plan_or_config, Plan):
        plan = plan_or_config

        def fixed(_layer, _head_dim):
            return plan

        return fixed
    if isinstance(plan_or_config, dict):
        fields = dict(plan_or_config)

        def from_fields(_layer, head_dim):
            return Plan(head_dim, **fields)

        return from_fields
    if callable(plan_or_config):
        return plan_or_config
    raise TypeError(
        "plan_or_config must be a smyrf.Plan, a dict of Plan config fields, or a callable "
        f"(layer_index, head_dim) -> Plan | None; got {type(plan_or_config).__name__}"
    )


def key_mask(attention_mask, batch, n_queries, n_keys):
    """Converts an HF attention mask to a boolean key mask ``[B, Nk]`` (True = attend).

    Accepts a boolean mask (True = attend) or an additive float mask (0 = attend, a large
    negative value = masked), of shape ``[B or 1, H or 1, Nq or 1, Nk]``. Refuses, with
    ValueError, a mask that differs between queries or heads (causal, sliding-window or
    per-head masks) or that carries other bias values: smyrf only takes key padding.
    Returns None when every key is valid.
    """
    if attention_mask is None:
        return None
    mask = attention_mask
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    if mask.dim() != 4:
        raise ValueError(f"smyrf: expected a 4-D attention mask [B, 1, Nq, Nk], got shape {tuple(mask.shape)}")
    if mask.shape[-1] != n_keys:
        raise ValueError(f"smyrf: attention mask has {mask.shape[-1]} keys, the call has {n_keys}")
    if mask.dtype == torch.bool:
        attend = mask
    elif mask.is_floating_point():
        # HF fills masked logits with the dtype's minimum; anything between is a bias.
        attend = mask == 0
        masked = mask <= torch.finfo(mask.dtype).min / 2
        if not bool(torch.all(attend | masked)):
            raise ValueError(
                "smyrf: the attention mask carries additive biases other than 0 and -inf "
                "(e.g. ALiBi or relative positions); only key-padding masks are supported"
            )
    else:
        raise ValueError(f"smyrf: unsupported attention mask dtype {mask.dtype}")
    first = attend[:, :1, :1, :]
    if not bool(torch.all(attend == first)):
        raise ValueError(
            "smyrf: the attention mask is not a key-padding mask (it differs between queries "
            "or heads, as a causal or sliding-window mask does); smyrf only supports "
            "non-causal attention with a key mask [B, Nk]"
        )
    keys = first[:, 0, 0, :]
    if keys.shape[0] not in (1, batch):
        raise ValueError(f"smyrf: attention mask batch {keys.shape[0]} does not match {batch}")
    if bool(torch.all(keys)):
        return None
    return keys.expand(batch, n_keys).contiguous()


def causal_key_mask(attention_mask, batch, n_queries, n_keys):
    """The key mask ``[B, Nk]`` (or None) of a causal module's HF mask.

    The mask must be the bottom-right causal pattern (query i, at position Nk - Nq + i,
    attends to keys at or before it) combined with key padding: exactly what the library's
    causal call computes. Raises ValueError for any other mask. None means no mask.
    """
    if attention_mask is None:
        return None
    mask = attention_mask
    if mask.dim() != 4 or mask.shape[-1] != n_keys or mask.shape[-2] != n_queries:
        raise ValueError(
            f"smyrf: expected a causal attention mask [B, 1, {n_queries}, {n_keys}], got shape "
            f"{tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        attend = mask
    elif mask.is_floating_point():
        attend = mask == 0
        if not bool(torch.all(attend | (mask <= torch.finfo(mask.dtype).min / 2))):
            raise ValueError(
                "smyrf: the attention mask carries additive biases other than 0 and -inf; only "
                "causal and key-padding masks are supported"
            )
    else:
        raise ValueError(f"smyrf: unsupported attention mask dtype {mask.dtype}")
    # The last query sits at the last key and sees every valid key.
    keys = attend[:, :1, -1, :]
    positions = torch.arange(n_keys - n_queries, n_keys)[:, None]
    causal = torch.arange(n_keys)[None, :] <= positions
    if not bool(torch.all(attend == (keys[:, :, None, :] & causal[None, None]))):
        raise ValueError(
            "smyrf: the attention mask of a causal layer is not the causal pattern with key "
            "padding (query i seeing the valid keys at or before position Nk - Nq + i), e.g. a "
            "sliding window or a per-head mask; smyrf does not support it"
        )
    keys = keys[:, 0, :]
    if keys.shape[0] not in (1, batch):
        raise ValueError(f"smyrf: attention mask batch {keys.shape[0]} does not match {batch}")
    if bool(torch.all(keys)):
        return None
    return keys.expand(batch, n_keys).contiguous()


def _make_attention_function(state):
    def smyrf_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if dropout and module.training:
            raise NotImplementedError("smyrf: attention dropout is not supported; call model.eval()")
        if kwargs.get("sliding_window"):
            raise NotImplementedError("smyrf: sliding-window attention is not supported")
        causal = kwargs.get("is_causal")
        if causal is None:
            causal = getattr(module, "is_causal", False)
        layer = state.layer_of_module.get(id(module), getattr(module, "layer_idx", None))
        if state.observer is not None:
            state.observer(layer, query, key, value, scaling)
        head_dim = query.shape[-1]
        cache_key = (layer, head_dim)
        if cache_key not in state.plans:
            state.plans[cache_key] = state.plan_for_layer(layer, head_dim)
        plan = state.plans[cache_key]
        # Timed from here: building a plan is a one-off cost, not attention time.
        start = time.perf_counter()
        batch, heads, n_queries, _ = query.shape
        convert = causal_key_mask if causal else key_mask
        mask = convert(attention_mask, batch, n_queries, key.shape[2])
        options = dict(
            attn_mask=mask,
            scale=scaling,
            enable_gqa=key.shape[1] != heads,
            head_sinks=kwargs.get("s_aux"),
            causal=bool(causal),
        )
        out = None
        if causal and plan is not None and state.decode_index:
            out = _decode_step(state, layer, plan, query, key, value, mask, scaling,
                               kwargs.get("s_aux"))
        if out is None and plan is None:
            out = smyrf_torch.dense_attention(query, key, value, **options)
        elif out is None:
            out = smyrf_torch.attention(query, key, value, plan=plan, **options)
        # The registry's contract: [B, Nq, H, Dv] output and no attention weights.
        out = out.transpose(1, 2).contiguous()
        state.seconds += time.perf_counter() - start
        state.calls += 1
        return out, None

    return smyrf_attention


# Queries per call that go through the KV-cache index: generation steps (one token, or a
# few speculative ones). Longer calls are prefills and run as causal calls.
_DECODE_MAX_QUERIES = 16


def _decode_step(state, layer, plan, query, key, value, mask, scaling, head_sinks):
    """A generation step through the layer's KV-cache index, or None for a call that is not
    one (a prefill, a padded batch, a plan that cannot decode): that call runs as a causal
    call and drops the layer's index.

    The index grows while each call's keys continue the previous call's (its length plus
    this call's queries); any other call rebuilds it from this call's cache. Keys are read
    in place; capacity doubles as the cache grows.
    """
    batch, _, n_queries, head_dim = query.shape
    kv_heads, n_keys = key.shape[1], key.shape[2]
    config = plan.config
    decodes = (
        mask is None
        and n_queries <= _DECODE_MAX_QUERIES
        and n_queries < n_keys
        and config["n_selected"] == 0
        and not (config["sink_selection"] == "mean_query" and config["n_sinks"] > 1)
    )
    if not decodes:
        state.indexes.pop(layer, None)
        return None
    entry = state.indexes.get(layer)
    fresh = (
        entry is None
        or entry["shape"] != (batch, kv_heads, head_dim)
        or entry["plan"] is not plan
        or entry["index"].lengths != [n_keys - n_queries] * batch
    )
    if fresh or entry["index"].capacity < n_keys:
        if fresh:
            # The plan of the index, with the call's logit scale.
            decode_plan = plan
            own = config["scale"] if config["scale"] is not None else head_dim ** -0.5
            if scaling is not None and float(torch.tensor(scaling, dtype=torch.float32)) != \
                    float(torch.tensor(own, dtype=torch.float32)):
                decode_plan = Plan(head_dim, **dict(config, scale=float(scaling)))
        else:
            decode_plan = entry["decode_plan"]
        index = KvIndex(decode_plan, batch, kv_heads, max(2 * n_keys, 1024))
        entry = {"plan": plan, "decode_plan": decode_plan, "index": index,
                 "shape": (batch, kv_heads, head_dim)}
        state.indexes[layer] = entry
    smyrf_torch.index_append(entry["index"], key, [n_keys] * batch)
    return smyrf_torch.decode(query, key, value, entry["index"], entry["decode_plan"],
                              head_sinks=head_sinks)


def patch(model, plan_or_config, *, decode_index=True):
    """Makes every attention layer of ``model`` run through smyrf; returns a ``PatchState``.

    ``plan_or_config`` is a ``smyrf.Plan`` (used by every layer), a dict of Plan config
    fields (a plan is built per head dimension), or a callable
    ``(layer_index, head_dim) -> Plan | None`` where None keeps that layer exact, computed
    by ``smyrf.torch.dense_attention``. Layers are numbered from 0 in module order.

    Causal layers (``module.is_causal``) run causal attention, so decoders work for the
    prompt and for generation with a K/V cache (each step's queries are the last positions).
    With ``decode_index`` (the default), generation steps without padding (at most 16 new
    queries over a longer cache) go through a per-layer ``smyrf.KvIndex`` grown by each
    step's keys (``smyrf.Plan.decode``: hash rounds as their decode form, blocks as the
    prefill's tile); prefills and padded batches run as causal calls.
    Causal calls take plain SMYRF, the causal §8 blocks (``smyrf.Plan.causal``) or exact
    attention; a plan with selected keys (``smyrf.Plan.hybrid``) is refused at the first
    causal call (ValueError). Raises ValueError if the model
    is already patched. The model must be on the CPU; call ``unpatch`` to restore it.
    """
    if getattr(model, _PATCH_ATTRIBUTE, None) is not None:
        raise ValueError("smyrf: this model is already patched; call smyrf.hf.unpatch(model) first")
    plan_for_layer = _plan_source(plan_or_config)
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(f"smyrf: found no attention layers that use the attention registry in {type(model).__name__}")
    configs = _configs(model)
    # The stored value, not the property: the property's setter also rewrites subconfigs.
    previous = [(config, _stored_implementation(config)) for config in configs]
    name = f"smyrf_{next(_names)}"
    state = PatchState(name, previous, plan_for_layer, {id(m): i for i, m in enumerate(modules)},
                       decode_index=bool(decode_index))

    attention_interface, _ = _registry()
    attention_interface.register(name, _make_attention_function(state))
    masks, sdpa_mask = _mask_registry()
    if masks is not None:
        # A boolean [B, 1, Nq, Nk] mask, or None without padding: what key_mask reads.
        masks.register(name, sdpa_mask)
    try:
        _set_implementation(model, configs, name)
    except Exception:
        _forget(name)
        raise
    setattr(model, _PATCH_ATTRIBUTE, state)
    return state


def _stored_implementation(config):
    return getattr(config, "_attn_implementation_internal", config._attn_implementation)


def _set_implementation(model, configs, name):
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    # Some submodels keep their own config object; make sure each one points at smyrf.
    for config in configs:
        if config._attn_implementation != name:
            config._attn_implementation = name


def _forget(name):
    _, functions = _registry()
    functions._global_mapping.pop(name, None)
    masks, _ = _mask_registry()
    if masks is not None:
        masks._global_mapping.pop(name, None)


def unpatch(model):
    """Restores the attention implementation ``model`` had before ``patch``.

    Every config's attention setting gets its earlier value back and the registry entry is
    removed. Raises ValueError if the model is not patched.
    """
    state = getattr(model, _PATCH_ATTRIBUTE, None)
    if state is None:
        raise ValueError("smyrf: this model is not patched")
    for config, implementation in state.previous:
        if hasattr(config, "_attn_implementation_internal"):
            config._attn_implementation_internal = implementation
        else:
            config._attn_implementation = implementation
    _forget(state.name)
    delattr(model, _PATCH_ATTRIBUTE)


def patch_state(model):
    """The ``PatchState`` of a patched model, or None."""
    return getattr(model, _PATCH_ATTRIBUTE, None)
