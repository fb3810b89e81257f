"""smyrf.hf against an unmodified all-MiniLM-L6-v2 and a tiny Llama model."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaModel
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


def _tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


# One round of one cluster holding every key: exact causal attention.
EXACT = {"n_hashes": 1, "q_cluster_size": 1 << 20}


def test_llama_patch_with_one_cluster_reproduces_prefill_and_generation():
    model = _tiny_llama()
    ids = torch.randint(1, 64, (2, 40), generator=torch.Generator().manual_seed(1))
    # Left padding, as batched generation pads: the first keys of row 1 are masked.
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :7] = 0
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
        want_tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                     do_sample=False, pad_token_id=0)
    state = hf.patch(model, EXACT)
    try:
        with torch.inference_mode():
            got = model(input_ids=ids, attention_mask=mask).logits
            got_tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                        do_sample=False, pad_token_id=0)
        assert state.calls > 0
    finally:
        hf.unpatch(model)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)
    assert torch.equal(got_tokens, want_tokens)
    # Without padding transformers may pass no mask at all: causal still holds.
    state = hf.patch(model, EXACT)
    try:
        with torch.inference_mode():
            got = model(input_ids=ids).logits
    finally:
        hf.unpatch(model)
    with torch.inference_mode():
        torch.testing.assert_close(got, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_llama_patch_with_clusters_changes_outputs_and_refuses_hybrid_blocks():
    model = _tiny_llama()
    ids = torch.randint(1, 64, (1, 64), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = model(input_ids=ids).logits
    hf.patch(model, {"n_hashes": 1, "q_cluster_size": 8})
    try:
        with torch.inference_mode():
            got = model(input_ids=ids).logits
    finally:
        hf.unpatch(model)
    assert not torch.allclose(got, want, atol=1e-3)
    # The first query sees only key 0 under any clustering: its logits stay exact.
    torch.testing.assert_close(got[:, 0], want[:, 0], atol=1e-5, rtol=1e-5)
    hf.patch(model, lambda _layer, head_dim: smyrf.Plan.hybrid(head_dim, 16))
    try:
        with pytest.raises(ValueError, match="causal attention takes neither selected keys"):
            with torch.inference_mode():
                model(input_ids=ids)
    finally:
        hf.unpatch(model)


def test_causal_key_mask_conversion_and_refusals():
    keys = torch.tensor([[False, True, True, True, True], [True, True, True, True, False]])
    causal = torch.ones(3, 5, dtype=torch.bool).tril(diagonal=2)
    mask = keys[:, None, None, :] & causal[None, None]
    assert torch.equal(hf.causal_key_mask(mask, 2, 3, 5), keys)
    additive = torch.zeros(2, 1, 3, 5).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.equal(hf.causal_key_mask(additive, 2, 3, 5), keys)
    assert hf.causal_key_mask(causal[None, None], 1, 3, 5) is None
    assert hf.causal_key_mask(None, 2, 3, 5) is None
    # Top-left alignment, a sliding window and a padding-only mask are not the pattern.
    for wrong in (torch.ones(3, 5, dtype=torch.bool).tril(),
                  causal & torch.ones(3, 5, dtype=torch.bool).triu(diagonal=1),
                  torch.ones(3, 5, dtype=torch.bool)):
        with pytest.raises(ValueError, match="not the causal pattern"):
            hf.causal_key_mask(wrong[None, None], 1, 3, 5)
    with pytest.raises(ValueError, match="expected a causal attention mask"):
        hf.causal_key_mask(causal[None, None, :2], 1, 3, 5)


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


def test_bert_configured_as_decoder_runs_causal():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, is_decoder=True)
    model = BertModel(config).eval()
    ids = torch.randint(1, 64, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = model(input_ids=ids).last_hidden_state
    hf.patch(model, EXACT)
    try:
        with torch.inference_mode():
            got = model(input_ids=ids).last_hidden_state
    finally:
        hf.unpatch(model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_llama_generation_goes_through_the_kv_cache_index():
    model = _tiny_llama()
    ids = torch.randint(1, 64, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want_tokens = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                     pad_token_id=0)
    # One round of one cluster holding every key is exact attention in decode too.
    state = hf.patch(model, EXACT)
    try:
        with torch.inference_mode():
            got_tokens = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                        pad_token_id=0)
        # Every layer's index holds the cache of the last step: prompt plus 5 new keys.
        assert sorted(state.indexes) == [0, 1]
        assert all(e["index"].lengths == [45, 45] for e in state.indexes.values())
    finally:
        hf.unpatch(model)
    assert torch.equal(got_tokens, want_tokens)

    # Key blocks without samples or rounds: each step through the index gives the bits of
    # the causal call of its one query, so the scores match the patch without the index.
    blocks = lambda _layer, head_dim: smyrf.Plan.causal(head_dim, 16, block_tile=1,
                                                        block_size=4)

    def scores(decode_index):
        hf.patch(model, blocks, decode_index=decode_index)
        try:
            with torch.inference_mode():
                out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False,
                                     pad_token_id=0, output_scores=True,
                                     return_dict_in_generate=True)
        finally:
            hf.unpatch(model)
        return torch.stack(out.scores)

    with_index, without = scores(True), scores(False)
    assert torch.equal(with_index, without)
    # A round over clusters of 4 keys changes decode: the index's hash orders are used.
    rounds = lambda _layer, head_dim: smyrf.Plan.causal(head_dim, 16, block_tile=1,
                                                        n_hashes=1, k_cluster_size=4)
    hf.patch(model, rounds)
    try:
        with torch.inference_mode():
            hashed = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False,
                                    pad_token_id=0, output_scores=True,
                                    return_dict_in_generate=True)
    finally:
        hf.unpatch(model)
    assert not torch.equal(torch.stack(hashed.scores), with_index)
