"""MultiNLI with group_DRO's random split (`metadata_random.csv`) or TFDS `multi_nli`.

`metadata_random.csv` columns `gold_label` (0 contradiction, 1 entailment, 2 neutral), `split`
(0/1/2), optional `sentence2_has_negation`; its rows are the MultiNLI pairs of
`multinli_1.0_train.jsonl`, `multinli_1.0_dev_matched.jsonl`, `multinli_1.0_dev_mismatched.jsonl`
in that order without the "-" (no consensus) rows, or come with `sentence1`/`sentence2` text
columns. Spurious a = the hypothesis contains nobody/no/never/nothing after lower-casing and
stripping punctuation. Groups g = 2 * label + a (6 groups).
"""
from __future__ import annotations

import json
import os
import string
from typing import Sequence

import numpy as np

from gradtune_jax.data.dataset import GroupDataset, Split, take
from gradtune_jax.data.files import (SPLIT_CODES, parse_codes, parse_ints, read_csv, report_counts, require_dir,
                                     split_indices)
from gradtune_jax.data.text import MULTINLI_MAX_LENGTH, text_inputs
from gradtune_jax.errors import UserError

NEGATION_WORDS = frozenset({"nobody", "no", "never", "nothing"})
LABELS = ("contradiction", "entailment", "neutral")  # group_DRO order
LABEL_CODES = {name: i for i, name in enumerate(LABELS)}
TFDS_TO_GROUP_DRO = np.array([1, 2, 0])  # TFDS/HF: entailment 0, neutral 1, contradiction 2
JSONL_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl", "multinli_1.0_dev_mismatched.jsonl")
KNOWN_COUNTS = {"train": (57498, 11158, 67376, 1521, 66630, 1992),
                "val": (22814, 4634, 26949, 613, 26655, 797),
                "test": (34597, 6655, 40496, 886, 39930, 1148)}
_STRIP = str.maketrans("", "", string.punctuation)


def has_negation(sentence: str) -> bool:
    """True if `sentence` contains nobody/no/never/nothing as a word (lower-cased, punctuation removed)."""
    return any(w in NEGATION_WORDS for w in sentence.lower().translate(_STRIP).split())


def negation_attr(hypotheses: Sequence[str]) -> np.ndarray:
    """The spurious attribute (0/1 int64) of each hypothesis."""
    return np.fromiter((has_negation(h) for h in hypotheses), np.int64, len(hypotheses))


def remap_tfds_labels(labels: Sequence[int]) -> np.ndarray:
    """TFDS/HF label order (entailment 0, neutral 1, contradiction 2) -> group_DRO order
    (contradiction 0, entailment 1, neutral 2)."""
    labels = np.asarray(labels, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 2):
        raise UserError(f"MultiNLI labels must be 0, 1 or 2 in TFDS order, got values {sorted(set(labels.tolist()))}")
    return TFDS_TO_GROUP_DRO[labels]


def read_jsonl_pairs(folder: str) -> tuple[list[str], list[str], np.ndarray]:
    """Premises, hypotheses and group_DRO labels of the three MultiNLI jsonl files (in `folder` or
    its `multinli_1.0/`), in order, without the "-" rows."""
    root = folder if os.path.isfile(os.path.join(folder, JSONL_FILES[0])) else os.path.join(folder, "multinli_1.0")
    prem, hyp, lab = [], [], []
    for name in JSONL_FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise UserError(f"{path}: file not found; expected the MultiNLI 1.0 files {', '.join(JSONL_FILES)} "
                            f"next to metadata_random.csv, or sentence1/sentence2 columns in it")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    gold, s1, s2 = r["gold_label"], r["sentence1"], r["sentence2"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{path}: line {line_no} is not a JSON object with gold_label, sentence1, "
                                    f"sentence2") from None
                if gold == "-":
                    continue
                if gold not in LABEL_CODES:
                    raise UserError(f"{path}: line {line_no} gold_label must be one of {', '.join(LABELS)} or -, "
                                    f"got {gold!r}")
                prem.append(s1)
                hyp.append(s2)
                lab.append(LABEL_CODES[gold])
    return prem, hyp, np.asarray(lab, np.int64)


def _check_aligned(meta_path: str, labels: np.ndarray, text_labels: np.ndarray, what: str) -> None:
    if len(text_labels) != len(labels):
        raise UserError(f"{meta_path}: {len(labels)} rows but {what} give {len(text_labels)} pairs; expected one "
                        f"pair per row (train, dev_matched, dev_mismatched in order, '-' rows dropped)")
    bad = np.flatnonzero(labels != text_labels)
    if len(bad):
        raise UserError(f"{meta_path}: gold_label disagrees with {what} on {len(bad)} rows (first: row {bad[0] + 1}); "
                        f"the rows must be the pairs in order train, dev_matched, dev_mismatched")


def load_multinli(data_dir: str | None = None, tokenizer_dir: str | None = None, max_length: int = MULTINLI_MAX_LENGTH, *,
                  source: str = "files", negation: str = "text", metadata_path: str | None = None,
                  verbose: bool = True) -> GroupDataset:
    """MultiNLI as a 3-class, 6-group text dataset.

    Args:
      data_dir: folder with `metadata_random.csv` and the jsonl files (for `source="tfds"`: the
        TFDS data dir with a prepared `multi_nli`).
      tokenizer_dir: local tokenizer folder; x is then int32 `input_ids`/`attention_mask`/
        `token_type_ids` of the (premise, hypothesis) pairs; None keeps the raw strings.
      max_length: token length (128 in the papers).
      source: "files", or "tfds" (group_DRO's random split when `metadata_path` is given, else TFDS'
        own splits: train / validation_matched as val / validation_mismatched as test).
      negation: "text" computes a from the hypothesis; "metadata" uses `sentence2_has_negation`.
      metadata_path: `metadata_random.csv` elsewhere than in `data_dir` (needed for "tfds" to use
        group_DRO's split); the jsonl files are read from `data_dir`, else from next to it.
      verbose: print per-split group counts (warning when they differ from group_DRO's).
    """
    if negation not in ("text", "metadata"):
        raise UserError(f"negation must be 'text' or 'metadata', got {negation!r}")
    if source == "files" and metadata_path is None:
        data_dir = require_dir(data_dir, "multinli", "a folder with metadata_random.csv and the MultiNLI jsonl files")
        metadata_path = os.path.join(data_dir, "metadata_random.csv")
    elif source not in ("files", "tfds"):
        raise UserError(f"source must be 'files' or 'tfds', got {source!r}")
    meta_neg = None
    if metadata_path is not None:
        cols = read_csv(metadata_path, ("gold_label", "split"), ("sentence2_has_negation", "sentence1", "sentence2"))
        labels = parse_ints(cols["gold_label"], metadata_path, "gold_label", (0, 1, 2))
        split = parse_codes(cols["split"], metadata_path, "split", SPLIT_CODES)
        if "sentence2_has_negation" in cols:
            meta_neg = parse_ints(cols["sentence2_has_negation"], metadata_path, "sentence2_has_negation", (0, 1))
        if source == "tfds":
            from gradtune_jax.data.tfds_source import MULTINLI_SPLITS, multinli_tfds

            t = multinli_tfds(data_dir)
            prem = [p for s in MULTINLI_SPLITS for p in t[s]["premise"]]
            hyp = [h for s in MULTINLI_SPLITS for h in t[s]["hypothesis"]]
            text_labels = remap_tfds_labels([v for s in MULTINLI_SPLITS for v in t[s]["label"]])
            _check_aligned(metadata_path, labels, text_labels, f"TFDS multi_nli in {data_dir}")
        elif "sentence1" in cols and "sentence2" in cols:
            prem, hyp = cols["sentence1"], cols["sentence2"]
        else:
            prem, hyp, text_labels = read_jsonl_pairs(data_dir or os.path.dirname(metadata_path) or ".")
            _check_aligned(metadata_path, labels, text_labels, "the MultiNLI jsonl files")
        comparable = True
    else:
        from gradtune_jax.data.tfds_source import MULTINLI_SPLITS, multinli_tfds

        t = multinli_tfds(data_dir)
        prem = [p for s in MULTINLI_SPLITS for p in t[s]["premise"]]
        hyp = [h for s in MULTINLI_SPLITS for h in t[s]["hypothesis"]]
        labels = remap_tfds_labels([v for s in MULTINLI_SPLITS for v in t[s]["label"]])
        split = np.concatenate([np.full(len(t[s]["label"]), i, np.int64) for i, s in enumerate(MULTINLI_SPLITS)])
        comparable = False
    if negation == "metadata":
        if meta_neg is None:
            raise UserError(f"{metadata_path or data_dir}: negation='metadata' needs a sentence2_has_negation column")
        a = meta_neg
    else:
        a = negation_attr(hyp)
    info = {"source": source, "root": data_dir, "negation": negation, "max_length": max_length,
            "tokenizer_dir": tokenizer_dir, "comparable_with_published": comparable}
    if meta_neg is not None:
        info["negation_disagreements"] = int(np.sum(negation_attr(hyp) != meta_neg))
        if verbose and info["negation_disagreements"]:
            print(f"multinli: the hypothesis-based negation differs from sentence2_has_negation on "
                  f"{info['negation_disagreements']} rows (using negation={negation!r})")
    x = text_inputs(tokenizer_dir, {"premise": list(prem), "hypothesis": list(hyp)}, max_length)
    parts = split_indices(split, metadata_path or data_dir)
    splits = {s: Split(x=take(x, idx), y=labels[idx], a=a[idx], n_classes=3, n_attrs=2) for s, idx in parts.items()}
    ds = GroupDataset(
        name="multinli", **splits, class_names=LABELS, attr_names=("no_negation", "negation"),
        group_names=tuple(f"{c}/{n}" for c in LABELS for n in ("no_negation", "negation")),
        input_kind="text", info=info)
    ds.info["counts_match_known"] = report_counts(ds, KNOWN_COUNTS if comparable else None, verbose=verbose)
    return ds
