"""Language-modelling data sets from the plain-text corpora.

Batches are ``{"obs": int32 (B, T), "target": int32 (B, T)}`` with ``target``
the next token of ``obs``. They are substitutes for the reference's LM1B and
Wikipedia pipelines (spec §11.3–11.4), which are not available offline.

Corpora, below ``<data root>/text/`` (gzipped or plain):

* ``shakespeare``: ``shakespeare_plays.txt.gz``, 42 plays, 5.06 M characters.
* ``brown``: ``brown_corpus.txt.gz``, the Brown corpus, one sentence a line.

Neither file has a public canonical URL in this layout, so when one is missing
it can only come from ``$CELO_DATA_MIRROR`` (checked against its SHA-256).

Tokenisation (``vocab``):

* ``"char"``: Unicode code points.
* ``"word"``: runs of word characters, with internal apostrophes or hyphens
  kept (``don't``, ``over-all``), and every other non-space character as its
  own token; case is kept and whitespace dropped.
* ``"byte"``: UTF-8 bytes; the id is the byte value and ``V = 256``.

For ``char`` and ``word`` the vocabulary is built on the train split only:
id 0 is padding (never produced here, reserved for models), id 1 the unknown
token, then tokens by descending frequency with ties broken by the token's
lexicographic order. ``vocab_size`` caps ``V`` including the two reserved ids;
rarer tokens map to 1.

Splits cut the token stream of the whole corpus in file order:
train ``[0:80%]``, inner_valid ``[80%:90%]``, outer_valid ``[90%:95%]``,
test ``[95%:]``. Each split is cut into windows of ``T + 1`` tokens with
stride ``T`` (consecutive windows share one token, so every transition is a
target exactly once); windows are shuffled every epoch and the remainder
dropped.
"""

from __future__ import annotations

import collections
import functools
import gzip
import os
import re
from pathlib import Path

import numpy as np

from celo.data import base, download, paths

CORPORA = {"shakespeare": "shakespeare_plays.txt", "brown": "brown_corpus.txt"}
VOCABS = ("char", "word", "byte")
PAD_ID, UNK_ID = 0, 1
SPLIT_PERCENTS = {
    "train": (0, 80),
    "inner_valid": (80, 90),
    "outer_valid": (90, 95),
    "test": (95, 100),
}
_WORD_RE = re.compile(r"\w+(?:['\-]\w+)*|[^\w\s]")

PathLike = str | os.PathLike[str] | None


def _corpus_bytes(corpus: str, root: str) -> bytes:
    if corpus not in CORPORA:
        raise ValueError(f"Unknown corpus {corpus!r}; expected one of {sorted(CORPORA)}.")
    folder = Path(root) / "text"
    gz, plain = folder / f"{CORPORA[corpus]}.gz", folder / CORPORA[corpus]
    if plain.is_file() and not gz.is_file():
        return plain.read_bytes()
    if not gz.is_file():
        download.ensure_files(corpus, root, looked_for=[str(plain)])
    return gzip.decompress(gz.read_bytes())


def _tokens(text: str, vocab: str) -> list[str]:
    return list(text) if vocab == "char" else _WORD_RE.findall(text)


def _build_vocab(train_tokens: list[str], vocab_size: int | None) -> list[str]:
    counts = collections.Counter(train_tokens)
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    if vocab_size is not None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size must leave room for pad, unk and a token: {vocab_size}")
        ordered = ordered[: vocab_size - 2]
    return ["<pad>", "<unk>", *ordered]


def _bounds(n: int) -> dict[str, tuple[int, int]]:
    return {
        s: (base.percent_boundary(lo, n), base.percent_boundary(hi, n))
        for s, (lo, hi) in SPLIT_PERCENTS.items()
    }


@functools.cache
def _encoded(
    corpus: str, root: str, vocab: str, vocab_size: int | None
) -> tuple[dict[str, np.ndarray], tuple[str, ...] | None, int]:
    """Token ids per split, the id -> token table (None for bytes) and V."""
    raw = _corpus_bytes(corpus, root)
    if vocab == "byte":
        if vocab_size not in (None, 256):
            raise ValueError("the byte vocabulary has exactly 256 ids; leave vocab_size unset")
        ids = np.frombuffer(raw, np.uint8).astype(np.int32)
        table, size = None, 256
    else:
        tokens = _tokens(raw.decode("utf-8"), vocab)
        lo, hi = _bounds(len(tokens))["train"]
        table = _build_vocab(tokens[lo:hi], vocab_size)
        lookup = {t: i for i, t in enumerate(table) if i > UNK_ID}
        ids = np.fromiter((lookup.get(t, UNK_ID) for t in tokens), np.int32, len(tokens))
        table, size = tuple(table), len(table)
    splits = {s: ids[lo:hi] for s, (lo, hi) in _bounds(len(ids)).items()}
    base.readonly(*splits.values())
    return splits, table, size


def _windows(ids: np.ndarray, sequence_length: int) -> np.ndarray:
    """Read-only ``(num_windows, T + 1)`` view with stride ``T``."""
    if len(ids) < sequence_length + 1:
        return np.zeros((0, sequence_length + 1), np.int32)
    view = np.lib.stride_tricks.sliding_window_view(ids, sequence_length + 1)
    return view[::sequence_length]


def _shift(batch: base.Batch) -> base.Batch:
    w = batch["window"]
    return {"obs": np.ascontiguousarray(w[:, :-1]), "target": np.ascontiguousarray(w[:, 1:])}


def text_lm_datasets(
    corpus: str,
    batch_size: int,
    sequence_length: int,
    *,
    vocab: str = "char",
    vocab_size: int | None = None,
    seed: int = 0,
    data_dir: PathLike = None,
) -> base.Datasets:
    """Next-token prediction batches from a text corpus.

    Args:
        corpus: ``"shakespeare"`` or ``"brown"``.
        batch_size: sequences per batch.
        sequence_length: tokens per sequence ``T``.
        vocab: ``"char"``, ``"word"`` or ``"byte"`` (see the module docstring).
        vocab_size: cap on ``V`` including pad and unk (char/word only).
        seed: seeds every split's shuffling.
        data_dir: explicit data root.

    Returns:
        ``Datasets`` with ``extra_info = {"vocab_size": V, "vocab": id -> token
        tuple or None for bytes}``.
    """
    if vocab not in VOCABS:
        raise ValueError(f"Unknown vocab {vocab!r}; expected one of {VOCABS}.")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be positive: {sequence_length}")
    root = str(paths.data_root(data_dir))
    splits, table, size = _encoded(corpus, root, vocab, vocab_size)
    arrays = {s: {"window": _windows(ids, sequence_length)} for s, ids in splits.items()}
    return base.make_datasets(
        arrays,
        batch_size,
        seed=seed,
        batch_fn=_shift,
        extra_info={"vocab_size": size, "vocab": table},
        name=f"{corpus}/{vocab}",
    )
