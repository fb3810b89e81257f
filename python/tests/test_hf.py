"""smyrf.hf against an unmodified all-MiniLM-L6-v2 and a tiny Llama model."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import smyrf
from smyrf import hf
from smyrf.eval import DEFAULT_MODEL_PACKAGE, resolve_model

TEXTS = [
    "Attention clusters queries and keys by hashing them.",
    "A much longer sentence, so that the shorter ones in the batch are padded and the key "
    "mask is exercised: every padded key must be ignored by every query of its sequence.",
    "Short one.",
]


@pytest.fixture(scope="module")
def minilm():
    model_dir, gguf = resolve_model(DEFAULT_MODEL_PACKAGE)
    assert gguf is None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all()), "the batch must contain padding"
    return model, batch


def run(model, batch):
    with torch.inference_mode():
        return model(**batch).last_hidden_state


def valid(hidden, batch):
    """The hidden states of real tokens. Padded positions carry no meaning; there, rounding
    differences of 2e-7 after layer 0 grow to about 2e-4 over the six layers."""
    return hidden[batch["attention_mask"].bool()]


def test_one_cluster_of_every_key_reproduces_the_model(minilm):
    model, batch = minilm
    reference = run(model, batch)
    n = batch["input_ids"].shape[1]
    state = hf.patch(model, {"n_hashes": 1, "q_cluster_size": 4 * n})
    try:
        patched = run(model, batch)
    finally:
        hf.unpatch(model)
    assert state.calls == model.config.num_hidden_layers
    torch.testing.assert_close(valid(patched, batch), valid(reference, batch), atol=1e-5, rtol=1e-5)


def test_smyrf_config_changes_outputs_and_unpatch_restores_them(minilm):
    model, batch = minilm
    before_impl = model.config._attn_implementation
    reference = run(model, batch)
    state = hf.patch(model, smyrf.Plan(model.config.hidden_size // model.config.num_attention_heads,
                                       n_hashes=1, q_cluster_size=2))
    assert model.config._attn_implementation == state.name
    assert state.name in ALL_ATTENTION_FUNCTIONS
    patched = run(model, batch)
    hf.unpatch(model)
    assert (patched - reference).abs().max() > 1e-3, "the patch did not change the attention"
    assert model.config._attn_implementation == before_impl
    assert state.name not in ALL_ATTENTION_FUNCTIONS
    assert torch.equal(run(model, batch), reference)


def _attention_outputs(model, batch):
    """The output of every layer's self-attention module."""
    outputs, handles = [], []
    for layer in model.encoder.layer:
        handles.append(layer.attention.self.register_forward_hook(
            lambda _m, _i, out: outputs.append(out[0].detach().clone())))
    try:
        run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def test_per_layer_callable_keeps_chosen_layers_exact(minilm):
    model, batch = minilm
    reference = _attention_outputs(model, batch)
    seen = []

    def plans(layer, head_dim):
        seen.append((layer, head_dim))
        return None if layer == 0 else smyrf.Plan(head_dim, n_hashes=1, q_cluster_size=2)

    hf.patch(model, plans)
    try:
        patched = _attention_outputs(model, batch)
    finally:
        hf.unpatch(model)
    layers = model.config.num_hidden_layers
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert sorted(seen) == [(i, head_dim) for i in range(layers)]
    # Layer 0 sees the unchanged embeddings, so exact attention there gives the same output.
    torch.testing.assert_close(patched[0], reference[0], atol=1e-5, rtol=1e-5)
    assert (patched[1] - reference[1]).abs().max() > 1e-3


def test_every_layer_exact_reproduces_the_model(minilm):
    model, batch = minilm
    reference = run(model, batch)
    hf.patch(model, lambda _layer, _head_dim: None)
    try:
        patched = run(model, batch)
    finally:
        hf.unpatch(model)
    torch.testing.assert_close(valid(patched, batch), valid(reference, batch), atol=1e-5, rtol=1e-5)


def test_registered_function_handles_gqa_scaling_and_mask(minilm):
    model, _ = minilm
    state = hf.patch(model, lambda _layer, _head_dim: None)
    try:
        function = ALL_ATTENTION_FUNCTIONS[state.name]
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(2, 4, 7, 8, generator=gen)
        k = torch.randn(2, 2, 7, 8, generator=gen)
        v = torch.randn(2, 2, 7, 8, generator=gen)
        keys = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
        additive = torch.zeros(2, 1, 7, 7).masked_fill(~keys[:, None, None, :], torch.finfo(torch.float32).min)
        out, weights = function(model.encoder.layer[0].attention.self, q, k, v, additive, scaling=0.3)
    finally:
        hf.unpatch(model)
    assert weights is None
    assert out.shape == (2, 7, 4, 8)  # [B, N, H, D], as the registry's callers reshape it
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1),
        attn_mask=keys[:, None, None, :], scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_key_mask_conversion():
    keys = torch.tensor([[True, True, False], [True, False, False]])
    boolean = keys[:, None, None, :].expand(2, 1, 3, 3)
    additive = torch.zeros(2, 1, 3, 3).masked_fill(~boolean, torch.finfo(torch.float32).min)
    assert torch.equal(hf.key_mask(boolean, 2, 3, 3), keys)
    assert torch.equal(hf.key_mask(additive, 2, 3, 3), keys)
    assert torch.equal(hf.key_mask(keys[:, None, None, :], 2, 3, 3), keys)
    assert hf.key_mask(torch.ones(2, 1, 3, 3, dtype=torch.bool), 2, 3, 3) is None
    assert hf.key_mask(None, 2, 3, 3) is None


def test_key_mask_refuses_causal_and_bias_masks():
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))[None, None]
    with pytest.raises(ValueError, match="not a key-padding mask"):
        hf.key_mask(causal, 1, 3, 3)
    bias = -torch.arange(3.0)[None, None, None, :].expand(1, 1, 3, 3)
    with pytest.raises(ValueError, match="biases"):
        hf.key_mask(bias, 1, 3, 3)
    with pytest.raises(ValueError, match="keys"):
        hf.key_mask(torch.ones(1, 1, 3, 4, dtype=torch.bool), 1, 3, 3)


def test_llama_model_is_refused():
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaModel(config).eval()
    implementation = model.config._attn_implementation
    with pytest.raises(NotImplementedError, match="Causal attention is not in the smyrf library"):
        hf.patch(model, {"n_hashes": 1})
    assert model.config._attn_implementation == implementation
    assert hf.patch_state(model) is None


def test_bad_uses_are_refused(minilm):
    model, _ = minilm
    with pytest.raises(TypeError, match="plan_or_config"):
        hf.patch(model, 3)
    with pytest.raises(ValueError, match="not patched"):
        hf.unpatch(model)
    hf.patch(model, {"n_hashes": 1})
    try:
        with pytest.raises(ValueError, match="already patched"):
            hf.patch(model, {"n_hashes": 1})
    finally:
        hf.unpatch(model)


def test_bert_configured_as_decoder_is_refused():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, is_decoder=True)
    with pytest.raises(NotImplementedError, match="is_decoder=True"):
        hf.patch(BertModel(config).eval(), {"n_hashes": 1})
