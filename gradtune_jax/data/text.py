"""Tokenisation with a local transformers tokenizer folder (no download).

`AutoTokenizer.from_pretrained(dir)` reads `tokenizer.json` or `vocab.txt` (+ `tokenizer_config.json`)
from the folder. (transformers v5 trap: `BertTokenizerFast(vocab_file=...)` silently ignores the
file.) Inputs become a dict of int32 `(N, L)` arrays `input_ids`, `attention_mask`,
`token_type_ids`, padded/truncated to `max_length` (128 MultiNLI, 220 CivilComments).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np

from gradtune_jax.errors import UserError

KEYS = ("input_ids", "attention_mask", "token_type_ids")
MULTINLI_MAX_LENGTH = 128
CIVILCOMMENTS_MAX_LENGTH = 220


@functools.lru_cache(maxsize=4)
def load_tokenizer(tokenizer_dir: str) -> Any:
    """The tokenizer saved in `tokenizer_dir` (e.g. a BERT checkpoint folder)."""
    if not os.path.isdir(tokenizer_dir):
        raise UserError(f"{tokenizer_dir}: tokenizer folder not found; expected a local folder with "
                        f"tokenizer.json or vocab.txt (e.g. the bert-base-uncased folder)")
    if not any(os.path.isfile(os.path.join(tokenizer_dir, f)) for f in ("tokenizer.json", "vocab.txt")):
        raise UserError(f"{tokenizer_dir}: no tokenizer.json or vocab.txt; expected a saved tokenizer folder")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{tokenizer_dir}: cannot load the tokenizer ({first}); add a tokenizer_config.json "
                        f'such as {{"tokenizer_class": "BertTokenizer", "do_lower_case": true}}') from None


def tokenize(tokenizer_dir: str, texts: Sequence[str], pairs: Sequence[str] | None = None,
             max_length: int = MULTINLI_MAX_LENGTH, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Tokenise `texts` (or sentence pairs `texts`, `pairs`) to int32 `(N, max_length)` arrays."""
    tok = load_tokenizer(tokenizer_dir)
    n = len(texts)
    out = {k: np.zeros((n, max_length), np.int32) for k in KEYS}
    for s in range(0, n, batch_size):
        a = list(texts[s:s + batch_size])
        b = None if pairs is None else list(pairs[s:s + batch_size])
        enc = tok(a, b, max_length=max_length, padding="max_length", truncation=True,
                  return_token_type_ids=True, return_attention_mask=True)
        for k in KEYS:
            out[k][s:s + len(a)] = np.asarray(enc[k], np.int32)
    return out


def text_inputs(tokenizer_dir: str | None, fields: dict[str, Sequence[str]], max_length: int) -> dict[str, np.ndarray]:
    """Token arrays of one (`{"text": ...}`) or two (`{"premise", "hypothesis"}`) text fields, or
    the raw strings as object arrays when `tokenizer_dir` is None."""
    if tokenizer_dir is None:
        return {k: np.asarray(v, dtype=object) for k, v in fields.items()}
    texts = list(fields.values())
    return tokenize(tokenizer_dir, texts[0], texts[1] if len(texts) > 1 else None, max_length)
