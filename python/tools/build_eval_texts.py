"""Builds the evaluation texts in smyrf/data/ from the Python Language Reference.

The texts are sections of the reference as CPython ships it in ``pydoc_data.topics`` (the
plain-text help topics, PSF License 2.0). Each help topic is cut at paragraph boundaries
into pieces of at least MIN_CHARS characters, so that every text holds more than 512
WordPiece tokens; every third piece goes to the held-out set.

Run with the interpreter whose documentation you want: ``python tools/build_eval_texts.py``.
"""
import pathlib
import sys

import pydoc_data.topics

MIN_CHARS = 3000
MAX_PIECES_PER_TOPIC = 3  # spreads the texts over more topics than the few longest ones
HELD_OUT_EVERY = 3


def pieces(text):
    """Splits one topic at blank lines into pieces of at least MIN_CHARS characters."""
    out, current = [], []
    for paragraph in text.split("\n\n"):
        current.append(paragraph)
        if sum(len(p) for p in current) >= MIN_CHARS:
            out.append("\n\n".join(current).strip())
            current = []
    return out[:MAX_PIECES_PER_TOPIC]


def main():
    data = pathlib.Path(__file__).resolve().parent.parent / "smyrf" / "data"
    sets = {"dev": data / "dev", "heldout": data / "heldout"}
    for folder in sets.values():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.txt"):
            old.unlink()
    index = 0
    for topic, text in sorted(pydoc_data.topics.topics.items()):
        for part, piece in enumerate(pieces(text)):
            which = "heldout" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "dev"
            name = f"{index:03d}-{topic}-{part}.txt"
            (sets[which] / name).write_text(piece + "\n", encoding="utf-8")
            index += 1
    print(f"{index} texts from Python {sys.version.split()[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
