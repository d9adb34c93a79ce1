"""The recipe reaches every model a method trains: on a generated Waterbirds-layout folder with a
small ResNet and a weights file, every training run (checked where the state enters `loop.fit`)
starts from the weights and trains on batches that went through the recipe's train transform."""
import dataclasses

import jax
import numpy as np
import pytest

from experiments.configs import get_config
from gradtune_jax.data.synthetic import write_waterbirds_folder
from gradtune_jax.data.transforms import ImagePipeline
from gradtune_jax.data.waterbirds import load_waterbirds
from gradtune_jax.methods import debias, early, erm, retrain
from gradtune_jax.methods.jtt import JTTConfig
from gradtune_jax.methods.registry import RunContext, get_method
from gradtune_jax.methods.self_ft import SELFConfig
from gradtune_jax.methods.ula import ULAConfig
from gradtune_jax.models import init_variables
from gradtune_jax.models.weights import save_backbone
from gradtune_jax.train import loop
from gradtune_jax.train import recipe as recipe_mod
from gradtune_jax.train.recipe import Recipe, build_model

SIZE = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    data = write_waterbirds_folder(str(root / "wb"), counts={"train": (10, 4, 4, 10), "val": (6, 6, 6, 6),
                                                             "test": (4, 4, 4, 4)}, image_size=SIZE, seed=1)
    ds = load_waterbirds(data, image_size=SIZE, verbose=False)
    base = Recipe("resnet18_small", model_kwargs=(("width", 4),), pipeline=ImagePipeline(crop=10, resize=SIZE),
                  epochs=1, batch_size=16, checkpoint_every=0, eval_batch_size=64)
    pretrained = init_variables(build_model(base, 2), np.zeros((2, SIZE, SIZE, 3), np.float32), seed=123)
    path = str(root / "backbone.msgpack")
    save_backbone(path, pretrained)
    return ds, base.replace(weights=path), pretrained, root


@pytest.fixture
def spy(monkeypatch, setup):
    """Record, for every `fit` call: its description, whether the state started from the weights
    file's backbone, and how many batches went through `ImagePipeline.train`."""
    _, _, pretrained, _ = setup
    calls, transformed = [], {"n": 0}
    real_train = ImagePipeline.train

    def counting_train(self, x, rng):
        transformed["n"] += 1
        return real_train(self, x, rng)

    monkeypatch.setattr(ImagePipeline, "train", counting_train)
    real_fit = loop.fit

    def fit(state, split, recipe, **kw):
        want = jax.tree.leaves(pretrained["params"]["backbone"])
        got = jax.tree.leaves(jax.device_get(state.params["backbone"]))
        from_weights = all(np.allclose(a, b) for a, b in zip(want, got))
        before = transformed["n"]
        out = real_fit(state, split, recipe, **kw)
        calls.append({"desc": kw.get("desc"), "from_weights": from_weights, "batches": transformed["n"] - before,
                      "recipe": recipe})
        return out

    for mod in (erm, retrain, early, debias):
        monkeypatch.setattr(mod, "fit", fit)
    loads = []
    real_load = recipe_mod._load_weights
    monkeypatch.setattr(recipe_mod, "_load_weights", lambda r, *a: loads.append(r.weights) or real_load(r, *a))
    return calls, loads


def _check(calls, recipe, n_min=1):
    assert len(calls) >= n_min
    for c in calls:
        assert c["batches"] >= 1, c["desc"]  # every batch of the run went through the train transform
        assert c["recipe"].weights == recipe.weights and c["recipe"].pipeline == recipe.pipeline, c["desc"]


def test_every_training_path_uses_the_recipe(setup, spy, tmp_path):
    ds, recipe, _, _ = setup
    calls, loads = spy
    run = erm.erm_feature_set(ds, recipe, 0, str(tmp_path), progress=False, log=lambda *_: None)
    assert calls[-1]["desc"].startswith("ERM") and calls[-1]["from_weights"]
    hparams = {"jtt": JTTConfig(id_epochs=1, lambda_grid=(5.0,)), "self": SELFConfig(early_epochs=1, size=8),
               "ula": ULAConfig(ssl_epochs=1, ssl_batch_size=16, proj_dim=8, tau_grid=(1.0,))}
    for name in ("jtt", "group_dro", "rwg", "subg", "self", "ula"):
        ctx = RunContext(ds=ds, fs=run.fs, seed=0, workdir=str(tmp_path / name), recipe=recipe, hparams=hparams,
                         selection="fixed", progress=False)
        n = len(calls)
        early._CACHE.clear()  # SELF would reuse JTT's identical early checkpoint: make it train its own
        out = get_method(name).run(ctx)
        mine = calls[n:]
        _check(mine, recipe)
        if name == "ula":  # fine-tuning starts from the self-supervised backbone, which started from the weights
            assert recipe.weights in loads and not mine[-1]["from_weights"]
            assert out.info["ssl_init"]["source"] == "weights"
        else:
            assert all(c["from_weights"] for c in mine), name
        if name in ("jtt", "group_dro", "rwg", "subg"):
            assert out.info["recipe"]["init"]["sha256"] == recipe.describe()["init"]["sha256"]
    n = len(calls)
    states = debias.train_with_checkpoints(ds, recipe, 0, [1], progress=False)  # the TRAK ensemble
    debias.retrain_on(ds, recipe, 0, np.arange(len(ds.train)) % 3 > 0, progress=False)  # removal, LDS
    _check(calls[n:], recipe, 2)
    assert all(c["from_weights"] for c in calls[n:]) and len(states) == 1


def test_recipe_record_and_fingerprint(setup):
    _, recipe, _, _ = setup
    d = recipe.describe()
    assert d["init"]["source"] == "weights" and len(d["init"]["sha256"]) == 64
    assert d["pipeline"]["crop"] == 10 and d["pipeline"]["resize"] == SIZE and d["sampler"] == "class_balanced"
    assert recipe.fingerprint() != recipe.replace(weights=None).fingerprint()
    assert recipe.fingerprint() != recipe.replace(optim={"lr": 0.5}).fingerprint()
    assert recipe.fingerprint() == Recipe(**{f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
                                          ).fingerprint()


def test_fit_applies_the_train_transform_to_every_batch(setup, monkeypatch):
    ds, recipe, _, _ = setup
    seen = []
    real = ImagePipeline.train
    monkeypatch.setattr(ImagePipeline, "train", lambda self, x, rng: seen.append(x.shape) or real(self, x, rng))
    plain = recipe.replace(weights=None, epochs=2)
    state = erm.init_state(ds, plain, 0)
    loop.fit(state, ds.train, plain, seed=0, progress=False)
    assert len(seen) == 2 * loop.steps_per_epoch(len(ds.train), plain.batch_size)
    assert all(s[0] == plain.batch_size for s in seen)


def test_presets_differ_as_the_papers_say():
    for ds in ("waterbirds", "celeba_blond", "celeba_age"):
        g, a = get_config(ds, "gradtune"), get_config(ds, "attribution")
        assert g.recipe.model == "resnet50" and a.recipe.model == "resnet18"
        assert g.recipe.optim.name == "sgd" and a.recipe.optim.name == "adam"
        assert g.recipe.sampler == "class_balanced" and a.recipe.sampler == "uniform"
        assert g.recipe.pipeline is not None and a.recipe.pipeline is not None
    a = get_config("celeba_blond", "attribution").recipe
    assert (a.optim.lr, a.optim.weight_decay, a.batch_size, a.epochs) == (1e-3, 1e-4, 512, 10)
    assert get_config("celeba_age", "attribution").recipe.epochs == 5
    w = get_config("waterbirds", "attribution")
    assert (w.recipe.optim.lr, w.recipe.optim.weight_decay, w.recipe.batch_size, w.recipe.epochs) == (1e-4, 1e-4, 32, 20)
    assert w.expects_weights and (w.retrain_recipe.optim.lr, w.retrain_recipe.optim.weight_decay) == (1e-5, 0.1)
    assert not get_config("celeba_blond", "attribution").expects_weights  # from scratch
    g = get_config("waterbirds", "gradtune").recipe
    assert (g.optim.lr, g.optim.schedule, g.batch_size, g.epochs) == (3e-3, "cosine", 32, 100)
    assert get_config("digits", "gradtune").recipe == get_config("digits", "attribution").recipe


def test_weighted_average_uses_the_datasets_own_train_counts(setup):
    from experiments.runner import run_methods

    ds, recipe, _, root = setup
    cfg = dataclasses.replace(get_config("waterbirds", "gradtune"), recipe=recipe.replace(weights=None),
                              seeds=(0,))
    res = run_methods(ds, cfg, ["erm"], [0], str(root / "wavg"), progress=False, log=lambda *_: None)
    m = res["erm"][0]["metrics"]
    counts = ds.train.group_counts().astype(float)
    want = float(np.sum(np.asarray(m["group_acc"]) * counts) / counts.sum())
    assert m["wavg"] == pytest.approx(want)
