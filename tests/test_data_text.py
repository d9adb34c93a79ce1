"""MultiNLI and CivilComments files, negation, label remap, both CivilComments groupings, tokens."""
import csv
import json
import os

import numpy as np
import pytest

from gradtune_jax.data import load_dataset
from gradtune_jax.data.civilcomments import IDENTITIES, group_masks_wilds16, load_civilcomments
from gradtune_jax.data.multinli import has_negation, load_multinli, remap_tfds_labels
from gradtune_jax.data.synthetic import write_civilcomments_csv, write_multinli_folder, write_tokenizer_folder
from gradtune_jax.data.text import load_tokenizer, tokenize
from gradtune_jax.errors import UserError
from gradtune_jax.metrics import evaluate


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return write_tokenizer_folder(str(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("sentence, neg", [
    ("Nobody came.", True), ("There is NO cat!", True), ("I never said that", True), ("Nothing, really.", True),
    ("No.", True), ("Know nothing-else", False), ("Nobodys home", False), ("The notion of snow", False),
    ("None of them", False), ("it's not there", False), ("no-one is here", False),
])
def test_negation_detection(sentence, neg):
    assert has_negation(sentence) is neg


def test_label_remap():
    # TFDS/HF: entailment 0, neutral 1, contradiction 2 -> group_DRO: contradiction 0, entailment 1, neutral 2
    assert remap_tfds_labels([0, 1, 2]).tolist() == [1, 2, 0]
    with pytest.raises(UserError, match="0, 1 or 2"):
        remap_tfds_labels([3])


@pytest.mark.parametrize("layout", ["jsonl", "columns"])
def test_multinli_layouts(tmp_path, tok, layout, capsys):
    gen = write_multinli_folder(str(tmp_path), n=60, layout=layout, seed=1)
    ds = load_multinli(str(tmp_path), tokenizer_dir=tok, max_length=16)
    assert ds.n_classes == 3 and ds.n_groups == 6 and ds.input_kind == "text"
    for code, s in enumerate(("train", "val", "test")):
        rows = gen["split"] == code
        sp = ds.split(s)
        assert sp.y.tolist() == gen["labels"][rows].tolist()
        assert sp.a.tolist() == gen["negation"][rows].astype(int).tolist()
        assert set(sp.x) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.dtype == np.int32 and v.shape == (len(sp), 16) for v in sp.x.values())
    assert ds.info["negation_disagreements"] == 0
    assert "contradiction/negation" in capsys.readouterr().out
    # the pair is encoded: [CLS] premise [SEP] hypothesis [SEP], segment ids 0 then 1
    row = ds.train.x["token_type_ids"][0]
    assert row[0] == 0 and row.max() == 1


def test_multinli_metadata_negation_and_raw_text(tmp_path):
    gen = write_multinli_folder(str(tmp_path), n=30, layout="columns", seed=2)
    meta = tmp_path / "metadata_random.csv"
    with open(meta) as f:
        rows = list(csv.reader(f))
    rows[1][2] = str(1 - int(rows[1][2]))  # flip one sentence2_has_negation
    with open(meta, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    text = load_multinli(str(tmp_path), verbose=False)
    metad = load_dataset("multinli", data_dir=str(tmp_path), negation="metadata", verbose=False)
    assert text.info["negation_disagreements"] == 1
    assert int(np.sum(np.concatenate([text.split(s).a != metad.split(s).a for s in ("train", "val", "test")]))) == 1
    assert text.train.x["premise"][0] == gen["pairs"][np.flatnonzero(gen["split"] == 0)[0]][0]


def _jsonl_edit(path, fn):
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize("edit, match", [
    (lambda d: os.remove(d / "multinli_1.0_dev_mismatched.jsonl"), "dev_mismatched.jsonl: file not found"),
    (lambda d: _jsonl_edit(d / "multinli_1.0_train.jsonl", lambda l: l[1:]), "60 rows but the MultiNLI jsonl files give 59"),
    (lambda d: _jsonl_edit(d / "multinli_1.0_train.jsonl", lambda l: l[1:2] + l[:1] + l[2:]), "gold_label disagrees"),
    (lambda d: _jsonl_edit(d / "multinli_1.0_train.jsonl", lambda l: ["{oops"] + l[1:]), "train.jsonl: line 1 is not a JSON"),
    (lambda d: _jsonl_edit(d / "multinli_1.0_train.jsonl",
                           lambda l: [json.dumps({**json.loads(l[0]), "gold_label": "maybe"})] + l[1:]), "'maybe'"),
    (lambda d: _jsonl_edit(d / "metadata_random.csv", lambda l: [l[0].replace("gold_label", "label")] + l[1:]),
     r"metadata_random.csv: missing column\(s\) gold_label"),
    (lambda d: _jsonl_edit(d / "metadata_random.csv", lambda l: l[:1] + [l[1][:-1] + "5"] + l[2:]),
     "column split must be one of 0, 1, 2; got row 1: '5'"),
])
def test_multinli_errors(tmp_path, edit, match):
    n = 60
    gen = write_multinli_folder(str(tmp_path), n=n, layout="jsonl", seed=3)
    # make the first two train rows differ in label so that swapping them is detectable
    assert gen["labels"][0] != gen["labels"][1], "seed 3 must give two different first labels"
    edit(tmp_path)
    with pytest.raises(UserError, match=match):
        load_multinli(str(tmp_path), verbose=False)


def test_tokenizer(tok, tmp_path):
    out = tokenize(tok, ["The cat sat.", "a"], max_length=6)
    assert out["input_ids"].shape == (2, 6) and out["input_ids"].dtype == np.int32
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    vocab = open(os.path.join(tok, "vocab.txt")).read().split()
    assert out["input_ids"][0, 1] == vocab.index("the")  # lower-cased, from this vocab (not a default one)
    with pytest.raises(UserError, match="tokenizer folder not found"):
        load_tokenizer(str(tmp_path / "none"))
    with pytest.raises(UserError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(str(tmp_path))


@pytest.fixture(scope="module")
def civil(tmp_path_factory):
    root = tmp_path_factory.mktemp("civil")
    return str(root), write_civilcomments_csv(str(root), n=120, seed=0)


def test_civilcomments_groupings_and_wga(civil, tok):
    root, gen = civil
    four = load_civilcomments(root, tokenizer_dir=tok, max_length=24, verbose=False)
    wilds = load_dataset("civilcomments_wilds", data_dir=root, verbose=False)
    y_all = (gen["toxicity"] >= 0.5).astype(int)
    present = gen["identities"] >= 0.5
    code = {"train": 0, "val": 1, "test": 2}
    for s in code:
        rows = gen["split"] == s
        assert four.split(s).y.tolist() == y_all[rows].tolist()
        assert four.split(s).a.tolist() == present[rows].any(1).astype(int).tolist()
        m = wilds.split(s).masks()
        assert m.shape == (rows.sum(), 16)
        for i in range(8):
            assert m[:, 2 * i].tolist() == (present[rows, i] & (y_all[rows] == 0)).tolist()
            assert m[:, 2 * i + 1].tolist() == (present[rows, i] & (y_all[rows] == 1)).tolist()
    assert four.train.x["input_ids"].shape == (len(four.train), 24)
    assert four.n_groups == 4 and wilds.n_groups == 16
    assert wilds.names_of_groups()[:2] == ["male/non_toxic", "male/toxic"]
    # WGA: predict "non-toxic" everywhere -> every toxic group has accuracy 0 in both groupings
    sp4, sp16 = four.test, wilds.test
    pred = np.zeros(len(sp4), int)
    r4 = evaluate(pred, sp4.y, sp4.masks())
    r16 = evaluate(pred, sp16.y, sp16.masks())
    assert r4["wga"] == 0.0 and r16["wga"] == 0.0
    # perfect predictions except on one identity-toxic example: WGA is that example's worst group
    pred = sp16.y.copy()
    hit = np.flatnonzero(sp16.masks()[:, 1::2].any(1))[0]
    pred[hit] = 0
    sizes16 = sp16.masks().sum(0)[sp16.masks()[hit]]
    assert evaluate(pred, sp16.y, sp16.masks())["wga"] == pytest.approx(np.min((sizes16 - 1) / sizes16))
    size4 = sp4.masks().sum(0)[sp4.g[hit]]
    assert evaluate(pred, sp4.y, sp4.masks())["wga"] == pytest.approx((size4 - 1) / size4)


def test_wilds16_masks_overlap():
    y = np.array([0, 1, 1])
    ident = np.zeros((3, 8))
    ident[0, [0, 6]] = 0.5  # male and black, non-toxic
    ident[1, 1] = 0.4  # below threshold: in no group
    ident[2, 2] = 1.0
    m = group_masks_wilds16(y, ident)
    assert m[0].nonzero()[0].tolist() == [0, 12]
    assert not m[1].any() and m[2].nonzero()[0].tolist() == [5]


def test_civilcomments_counts_printed(civil, capsys):
    root, _ = civil
    load_civilcomments(root)
    out = capsys.readouterr().out
    assert "toxic/identity" in out and "the known split has 269038" in out


@pytest.mark.parametrize("col, value, match", [
    ("toxicity", "1.5", r"column toxicity must be a number in \[0.0, 1.0\]; got row 1: '1.5'"),
    ("toxicity", "", "column toxicity must be a number"),
    ("split", "dev", "column split must be one of train, val, test; got row 1: 'dev'"),
    ("muslim", "x", "column muslim must be a number"),
])
def test_civilcomments_errors(civil, tmp_path, col, value, match):
    root, _ = civil
    with open(os.path.join(root, "all_data_with_identities.csv"), newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index(col)] = value
    with open(tmp_path / "all_data_with_identities.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(UserError, match=match) as e:
        load_civilcomments(str(tmp_path), verbose=False)
    assert "all_data_with_identities.csv" in str(e.value)


def test_civilcomments_missing(tmp_path):
    with pytest.raises(UserError, match="all_data_with_identities.csv found"):
        load_civilcomments(str(tmp_path))
    (tmp_path / "all_data_with_identities.csv").write_text("comment_text,toxicity,split,male\n")
    with pytest.raises(UserError, match=r"missing column\(s\) female, LGBTQ"):
        load_civilcomments(str(tmp_path))
    with pytest.raises(UserError, match="grouping"):
        load_civilcomments(str(tmp_path), grouping="8")
    assert len(IDENTITIES) == 8
