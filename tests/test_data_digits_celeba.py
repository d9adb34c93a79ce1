"""The CelebA-Blond-shaped embedded digits (`digits_celeba`): counts, sources, seeds, the cue."""
import numpy as np
import pytest

from gradtune_jax.data import load_dataset, make_digits_celeba
from gradtune_jax.data.digits import compose_splits, load_source_digits, source_partition
from gradtune_jax.data.digits_celeba import BG_GREY, CELEBA_COUNTS, CELEBA_QUICK_COUNTS, INK_RGB

SMALL = {"train": (6, 5, 3, 2), "val": (4, 4, 2, 1), "test": (4, 3, 2, 1)}
# CelebA-Blond's own group counts (GradTune Table 2 / spec/datasets.md)
CELEBA = {"train": (71629, 66874, 22880, 1387), "val": (8535, 8276, 2874, 182), "test": (9767, 7535, 2480, 180)}


@pytest.fixture(scope="module")
def full8():
    """The default counts at 8x8 (same counts and sources as 16x16, cheaper pixels)."""
    return make_digits_celeba(seed=0, size=8)


def test_exact_group_counts_per_split(full8):
    for s, want in CELEBA_COUNTS.items():
        assert full8.split(s).group_counts().tolist() == list(want)
    assert [len(full8.split(s)) for s in ("train", "val", "test")] == [20000, 4000, 4000]
    assert int(0.5 * len(full8.val)) >= 2000  # the held-out set D
    assert full8.train.x.shape == (20000, 8, 8, 3) and full8.train.x.dtype == np.float32
    assert 0.0 <= full8.train.x.min() and full8.train.x.max() <= 1.0
    assert full8.check_counts(CELEBA_COUNTS, log=lambda m: None)


def test_counts_follow_celeba_proportions():
    for s, ours in CELEBA_COUNTS.items():
        ours = np.array(ours) / sum(ours)
        theirs = np.array(CELEBA[s]) / sum(CELEBA[s])
        np.testing.assert_allclose(ours, theirs, atol=6e-4)  # one example of rounding at 4,000
    train = np.array(CELEBA_COUNTS["train"]) / 20000
    np.testing.assert_allclose(train, [0.440, 0.411, 0.141, 0.009], atol=6e-4)  # GradTune Table 2
    quick = {s: np.array(c) / sum(c) for s, c in CELEBA_QUICK_COUNTS.items()}
    for q in quick.values():  # --quick keeps the order of the groups and a tiny blond-male minority
        assert q[0] > q[1] > q[2] > q[3] > 0 and q[3] < 0.02


def test_sources_disjoint_between_splits_and_classes_right():
    """compose_splits with the source indices as 'images': every example's source digit."""
    imgs, labels = load_source_digits()
    idx = np.arange(len(imgs))
    splits = compose_splits(idx, labels, CELEBA_COUNTS, np.random.default_rng(0), lambda src, a: src)
    used = {s: set(sp.x.tolist()) for s, sp in splits.items()}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    for sp in splits.values():
        np.testing.assert_array_equal(labels[sp.x], sp.y)
    # the blond-male groups fit their split's sources without repeats
    for s in ("val", "test"):
        bm = splits[s].x[splits[s].g == 3]
        assert len(np.unique(bm)) == len(bm)


def test_images_come_from_their_split_sources():
    """End to end: with every augmentation off and no cue, each image's ink pattern is a source
    digit of its own split's partition (the first draw of the seed's generator)."""
    seed = 4
    ds = make_digits_celeba(seed=seed, size=8, noise=0.0, shift=0, cue=0.0, ink_jitter=0.0, bg_jitter=0.0,
                            counts=SMALL)
    imgs, _ = load_source_digits()
    parts = source_partition(len(imgs), np.random.default_rng(seed))
    mid = INK_RGB.mean(0)[0]
    flat = imgs.reshape(len(imgs), -1)
    ref = flat / flat.max(1, keepdims=True)
    for s in ("train", "val", "test"):
        ink = (BG_GREY - ds.split(s).x[..., 0].reshape(len(ds.split(s)), -1)) / (BG_GREY - mid)
        pat = ink / ink.max(1, keepdims=True)
        for p in pat:
            match = np.flatnonzero(np.abs(ref - p).max(1) < 1e-4)
            assert len(match) and np.isin(match, parts[s]).any()


def test_deterministic_from_seed_and_seeded():
    a = make_digits_celeba(seed=1, size=8, counts=SMALL)
    b = make_digits_celeba(seed=1, size=8, counts=SMALL)
    c = make_digits_celeba(seed=2, size=8, counts=SMALL)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(s).x, b.split(s).x)
        np.testing.assert_array_equal(a.split(s).g, b.split(s).g)
    assert not np.array_equal(a.train.x, c.train.x)
    assert not np.array_equal(a.train.g, c.train.g)  # the shuffle differs too


def test_ink_colour_carries_the_attribute(full8):
    """'female' ink is warm (red > blue), 'male' cool, on the stroke pixels of every split."""
    for s in ("train", "test"):
        x = full8.split(s).x
        stroke = x.mean(-1) < BG_GREY - 0.2  # darker than the grey background
        red_minus_blue = ((x[..., 0] - x[..., 2]) * stroke).sum((1, 2)) / np.maximum(stroke.sum((1, 2)), 1)
        a = full8.split(s).a
        assert red_minus_blue[a == 0].mean() > red_minus_blue[a == 1].mean() + 0.3


def test_registry_and_bad_arguments():
    ds = load_dataset("digits_celeba", verbose=False, size=8, counts=SMALL)
    assert ds.name == "digits_celeba" and ds.names_of_groups()[3] == "blond/male"
    with pytest.raises(ValueError, match="cue"):
        make_digits_celeba(cue=1.5, counts=SMALL)
    with pytest.raises(ValueError, match="size"):
        make_digits_celeba(size=12, counts=SMALL)


def test_cli_preset_quick_and_data_seed(tmp_path):
    """`--dataset digits_celeba`: the preset (small CNN, 10 epochs, full counts); `--quick` swaps in
    the quick counts at 8x8 and the tiny CNN; `--data-seed` reaches the builder; retraining
    baselines use the embedded (short) recipes."""
    from experiments import cli, table1
    from gradtune_jax.methods.baselines import family

    parse = table1.build_parser().parse_args
    full = cli.config_from_args(parse(["--dataset", "digits_celeba", "--out", str(tmp_path)]))
    assert full.dataset == "digits_celeba" and full.recipe.model == "small_cnn" and full.recipe.epochs == 10
    assert full.dataset_kwargs == {"seed": 0} and full.gradtune.size == 500 and full.gradtune.k == 400
    quick = cli.config_from_args(parse(["--dataset", "digits_celeba", "--quick", "--data-seed", "3", "--out",
                                        str(tmp_path)]))
    assert quick.dataset_kwargs == {"seed": 3, "counts": CELEBA_QUICK_COUNTS, "size": 8}
    assert quick.recipe.model == "tiny_cnn" and quick.seeds == (0,)
    ds = load_dataset(quick.dataset, verbose=False, **quick.dataset_kwargs)
    assert ds.train.x.shape[1:] == (8, 8, 3) and family(ds) == "embedded"
    assert not np.array_equal(ds.train.x[:5], make_digits_celeba(seed=0, size=8, counts=CELEBA_QUICK_COUNTS).train.x[:5])
