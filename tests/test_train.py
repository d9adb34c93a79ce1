import jax
import numpy as np
import pytest

from gradtune_jax.methods.erm import init_state
from gradtune_jax.train.last_layer import HeadConfig, index_plan, train_head
from gradtune_jax.train.loop import fit, predict
from gradtune_jax.train.optim import OptimConfig
from gradtune_jax.train.recipe import Recipe
from gradtune_jax.train.steps import train_step

CFG = Recipe("tiny_cnn", epochs=3, batch_size=16, checkpoint_every=1, optim=OptimConfig("sgd", 0.05, 1e-4, 0.9, "cosine"))


class Interrupt(Exception):
    pass


def _leaves(state):
    return [np.asarray(v) for v in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))]


def test_resume_gives_same_parameters_as_uninterrupted(small_digits, tmp_path):
    ds = small_digits
    full, _ = fit(init_state(ds, CFG, 0), ds.train, CFG, seed=0, workdir=str(tmp_path / "a"), progress=False)

    step = jax.jit(train_step)
    calls = {"n": 0}

    def flaky_step(state, batch):
        calls["n"] += 1
        if calls["n"] == 10:  # inside epoch 2 (6 steps per epoch): after epoch 1's checkpoint
            raise Interrupt()
        return step(state, batch)

    with pytest.raises(Interrupt):
        fit(init_state(ds, CFG, 0), ds.train, CFG, seed=0, workdir=str(tmp_path / "b"), progress=False,
            step_fn=flaky_step)
    resumed, hist = fit(init_state(ds, CFG, 0), ds.train, CFG, seed=0, workdir=str(tmp_path / "b"),
                        progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(resumed.step) == int(full.step)


def test_training_is_deterministic_and_learns(small_digits):
    ds = small_digits
    a, hist = fit(init_state(ds, CFG, 1), ds.train, CFG, seed=1, progress=False)
    b, _ = fit(init_state(ds, CFG, 1), ds.train, CFG, seed=1, progress=False)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    logits, feats = predict(a, ds.test.x, batch_size=32)
    assert logits.shape == (len(ds.test), 2) and feats.shape == (len(ds.test), 16)
    assert np.isfinite(hist[-1]["loss"])


def test_step_compiles_once(small_digits):
    traces = []

    def counted(state, batch):
        traces.append(1)  # runs only when jax traces (i.e. would compile) the step
        return train_step(state, batch)

    step = jax.jit(counted, donate_argnums=0)
    fit(init_state(small_digits, CFG, 0), small_digits.train, CFG, seed=0, progress=False, step_fn=step)
    assert len(traces) == 1  # 3 epochs, ragged last batch padded: one shape, one trace


def test_index_plan_class_balanced_and_padding():
    labels = np.array([0] * 90 + [1] * 10)
    cfg = HeadConfig(epochs=50, batch_size=32)
    idx, w = index_plan(labels, cfg, seed=0)
    assert idx.shape == (50 * 4, 32) and w.sum() == 50 * 100
    frac = labels[idx[w > 0]].mean()
    assert abs(frac - 0.5) < 0.03


def test_train_head_finetune_vs_reset():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 5)).astype(np.float32)
    y = (feats[:, 0] > 0).astype(np.int64)
    head = {"kernel": np.zeros((5, 2), np.float32), "bias": np.zeros(2, np.float32)}
    cfg = HeadConfig(epochs=30, batch_size=32, optim=OptimConfig("sgd", 0.1, 0.0))
    new = train_head(head, feats, y, cfg, seed=0)
    acc = ((feats @ np.asarray(new["kernel"]) + np.asarray(new["bias"])).argmax(1) == y).mean()
    assert acc > 0.95
    again = train_head(head, feats, y, cfg, seed=0)
    np.testing.assert_array_equal(np.asarray(new["kernel"]), np.asarray(again["kernel"]))
    # zero epochs of change: lr tiny -> fine-tuning stays near the start, reset does not
    tiny = HeadConfig(epochs=1, batch_size=32, optim=OptimConfig("sgd", 1e-8, 0.0))
    ft = train_head(head, feats, y, tiny, seed=0)
    rs = train_head(head, feats, y, HeadConfig(epochs=1, batch_size=32, optim=OptimConfig("sgd", 1e-8, 0.0),
                                               reset=True), seed=0)
    assert np.abs(np.asarray(ft["kernel"])).max() < 1e-6
    assert np.abs(np.asarray(rs["kernel"])).max() > 1e-2


def test_image_pipeline_train_augments_and_eval_preprocesses(small_digits):
    from gradtune_jax.data.transforms import ImagePipeline
    from gradtune_jax.methods.erm import train_model
    from gradtune_jax.train.state import variables_of

    pipe = ImagePipeline(crop=6, resize=8)
    cfg = CFG.replace(pipeline=pipe, epochs=1)
    state = train_model(small_digits, cfg, seed=0, progress=False)
    x = small_digits.test.x[:5]
    logits, _ = predict(state, x, batch_size=8)
    from gradtune_jax.models import create_model

    want, _ = create_model("tiny_cnn", 2).apply(variables_of(state), pipe.eval(x), train=False)
    np.testing.assert_allclose(logits, np.asarray(want), rtol=1e-5, atol=1e-6)
    raw, _ = create_model("tiny_cnn", 2).apply(variables_of(state), x, train=False)
    assert not np.allclose(logits, np.asarray(raw), atol=1e-3)  # the pipeline really ran
