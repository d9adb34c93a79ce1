"""Small generated folders in the real on-disk layouts (for tests and end-to-end CLI runs).

`write_waterbirds_folder` renders Waterbirds-shaped digit images (see `digits.py`) into the
group_DRO layout; the others write CelebA, MultiNLI and CivilComments files and a tiny BERT
tokenizer folder. Everything is deterministic in `seed` and needs no download.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from gradtune_jax.data.digits import _render

SMALL_WATERBIRDS_COUNTS = {"train": (24, 4, 4, 16), "val": (6, 6, 6, 6), "test": (6, 6, 6, 6)}
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
CIVIL_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
WORDS = ("the a cat dog man woman bird sat ran on in park is was not no never nobody nothing "
         "good bad very people said it there here big small").split()


def write_waterbirds_folder(path: str, counts: Mapping[str, Sequence[int]] | None = None,
                            image_size: int = 32, seed: int = 0) -> str:
    """Write `path/metadata.csv` and PNG images in class sub-folders; returns `path`.

    Args:
      counts: per split ("train", "val", "test") the four group counts (landbird-land,
        landbird-water, waterbird-land, waterbird-water); default a few dozen images.
      image_size: side of the written images (any positive int).
      seed: seed of the digit choice and rendering.
    """
    from sklearn.datasets import load_digits

    counts = dict(SMALL_WATERBIRDS_COUNTS if counts is None else counts)
    digits = load_digits()
    imgs = (digits.images / 16.0).astype(np.float32)
    labels = (digits.target >= 5).astype(np.int64)
    rng = np.random.default_rng([seed, 7])
    render_size = 8 * max(1, -(-image_size // 8))
    rows = []
    for code, split in enumerate(("train", "val", "test")):
        for gid, n in enumerate(counts[split]):
            y, place = divmod(gid, 2)
            pick = rng.choice(np.flatnonzero(labels == y), size=n)
            rendered = _render(imgs[pick], np.full(n, place), render_size, rng, 0.02, 1, 0.2)
            for img in rendered:
                img_id = len(rows) + 1
                rel = f"{'001.Landbird' if y == 0 else '002.Waterbird'}/{img_id:05d}.png"
                pil = Image.fromarray((img * 255).round().astype(np.uint8))
                if render_size != image_size:
                    pil = pil.resize((image_size, image_size), Image.BILINEAR)
                os.makedirs(os.path.join(path, os.path.dirname(rel)), exist_ok=True)
                pil.save(os.path.join(path, rel))
                place_file = f"/{'b/bamboo_forest' if place == 0 else 'o/ocean'}/{img_id:08d}.jpg"
                rows.append((img_id, rel, y, code, place, place_file))
    with open(os.path.join(path, "metadata.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        w.writerows(rows)
    return path


def write_celeba_folder(path: str, attrs: np.ndarray, split: np.ndarray, layout: str = "txt",
                        image_hw: tuple[int, int] = (22, 18), seed: int = 0) -> list[str]:
    """Write CelebA's attribute and partition files (`layout` "txt" original or "csv" Kaggle)
    and one small JPEG per row in `img_align_celeba/`; returns the file names.

    `attrs` is `(N, 40)` in {0, 1} (written as -1/1) in `CELEBA_ATTRS` order; `split` in {0,1,2}.
    """
    attrs = np.asarray(attrs)
    rng = np.random.default_rng([seed, 11])
    names = [f"{i + 1:06d}.jpg" for i in range(len(attrs))]
    os.makedirs(os.path.join(path, "img_align_celeba"), exist_ok=True)
    for n in names:
        px = rng.integers(0, 256, size=(*image_hw, 3), dtype=np.uint8)
        Image.fromarray(px).save(os.path.join(path, "img_align_celeba", n))
    pm = np.where(attrs > 0, 1, -1)
    if layout == "txt":
        with open(os.path.join(path, "list_attr_celeba.txt"), "w") as f:
            f.write(f"{len(names)}\n{' '.join(CELEBA_ATTRS)}\n")
            for n, row in zip(names, pm):
                f.write(n + " " + " ".join(f"{v:2d}" for v in row) + "\n")
        with open(os.path.join(path, "list_eval_partition.txt"), "w") as f:
            f.writelines(f"{n} {s}\n" for n, s in zip(names, split))
    elif layout == "csv":
        with open(os.path.join(path, "list_attr_celeba.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", *CELEBA_ATTRS])
            w.writerows([n, *row.tolist()] for n, row in zip(names, pm))
        with open(os.path.join(path, "list_eval_partition.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "partition"])
            w.writerows(zip(names, np.asarray(split).tolist()))
    else:
        raise ValueError(f"layout must be 'txt' or 'csv', got {layout!r}")
    return names


def random_sentence(rng: np.random.Generator, negation: bool | None = None) -> str:
    """A short sentence over `WORDS`; with `negation` True/False it does/does not contain a
    negation word (nobody, no, never, nothing)."""
    neg = {"no", "never", "nobody", "nothing"}
    pool = [w for w in WORDS if w not in neg]
    words = list(rng.choice(pool, size=int(rng.integers(3, 8))))
    if negation:
        words.insert(int(rng.integers(0, len(words))), str(rng.choice(sorted(neg))))
    return " ".join(words).capitalize() + rng.choice([".", "!", "?"])


def write_multinli_folder(path: str, n: int = 60, layout: str = "jsonl", seed: int = 0) -> dict:
    """Write group_DRO's `metadata_random.csv` and the sentence pairs, either as the three
    MultiNLI jsonl files (with a few "-" no-consensus rows, which are skipped) or as
    `sentence1`/`sentence2` columns. Returns the generated `labels` (group_DRO order),
    `negation`, `split` arrays.
    """
    rng = np.random.default_rng([seed, 13])
    label_text = ("contradiction", "entailment", "neutral")
    labels = rng.integers(0, 3, size=n)
    negation = rng.random(n) < np.where(labels == 0, 0.5, 0.15)
    split = rng.integers(0, 3, size=n)
    split[:3] = (0, 1, 2)
    pairs = [(random_sentence(rng), random_sentence(rng, bool(g))) for g in negation]
    os.makedirs(path, exist_ok=True)
    header = ["", "gold_label", "sentence2_has_negation", "split"]
    rows = [[i, labels[i], int(negation[i]), split[i]] for i in range(n)]
    if layout == "columns":
        header += ["sentence1", "sentence2"]
        rows = [r + list(p) for r, p in zip(rows, pairs)]
    elif layout == "jsonl":
        cuts = (0, int(0.6 * n), int(0.8 * n), n)
        files = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl", "multinli_1.0_dev_mismatched.jsonl")
        for fi, name in enumerate(files):
            with open(os.path.join(path, name), "w") as f:
                for i in range(cuts[fi], cuts[fi + 1]):
                    if fi > 0 and i == cuts[fi]:  # a no-consensus row, absent from the metadata
                        f.write(json.dumps({"gold_label": "-", "sentence1": "x", "sentence2": "y"}) + "\n")
                    f.write(json.dumps({"gold_label": label_text[labels[i]], "sentence1": pairs[i][0],
                                        "sentence2": pairs[i][1], "pairID": str(i)}) + "\n")
    else:
        raise ValueError(f"layout must be 'jsonl' or 'columns', got {layout!r}")
    with open(os.path.join(path, "metadata_random.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return {"labels": labels, "negation": negation, "split": split, "pairs": pairs}


def write_civilcomments_csv(path: str, n: int = 80, seed: int = 0) -> dict:
    """Write a WILDS-layout `all_data_with_identities.csv` into folder `path`; returns the
    generated `toxicity`, `identities (N, 8)` (fractions, `CIVIL_IDENTITIES` order) and `split`."""
    rng = np.random.default_rng([seed, 17])
    tox = np.round(rng.random(n) ** 2, 3)
    ident = np.where(rng.random((n, len(CIVIL_IDENTITIES))) < 0.15, np.round(rng.random((n, 8)), 2), 0.0)
    split = rng.choice(np.array(["train", "val", "test"]), size=n)
    split[:3] = ("train", "val", "test")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "all_data_with_identities.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "id", "comment_text", "split", "toxicity", "severe_toxicity", *CIVIL_IDENTITIES,
                    "transgender"])
        for i in range(n):
            text = random_sentence(rng) + ("\n" + random_sentence(rng) if i % 5 == 0 else "")
            idents = ["" if (i % 7 == 0 and v == 0) else v for v in ident[i]]  # some blanks, as in WILDS
            w.writerow([i, 1000 + i, text, split[i], tox[i], 0.0, *idents, 0.0])
    return {"toxicity": tox, "identities": ident, "split": split}


def write_tokenizer_folder(path: str, words: Sequence[str] = WORDS) -> str:
    """A tiny lower-casing BERT WordPiece tokenizer folder (`vocab.txt`, `tokenizer_config.json`)."""
    os.makedirs(path, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,!?'", *sorted(set(words))]
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, f)
    return path
