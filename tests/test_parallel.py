"""Data-parallel train steps (train/parallel.py) against the single-device step, mixed precision.

The multi-device checks run once, in a subprocess with 4 fake CPU devices (`JAX_NUM_CPU_DEVICES`
must be set before JAX starts; the pytest process already has 1 device), and report max absolute
differences and compilation counts as JSON; the tests below assert on that report.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtune_jax.models import create_model
from gradtune_jax.train.parallel import data_parallel, pad_batch
from gradtune_jax.train.state import create_state
from gradtune_jax.train.steps import train_step

N_DEVICES = 4
ROOT = Path(__file__).resolve().parents[1]


def _image_batch(n: int, size: int, seed: int, n_valid: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    w = np.zeros(n, np.float32)
    w[:n if n_valid is None else n_valid] = 1.0
    return {"x": rng.uniform(size=(n, size, size, 3)).astype(np.float32),
            "y": rng.integers(0, 2, n).astype(np.int32), "g": rng.integers(0, 4, n).astype(np.int32), "w": w}


def _text_batch(n: int, length: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None] < rng.integers(3, length + 1, n)[:, None]).astype(np.int32)
    x = {"input_ids": rng.integers(0, 128, (n, length)).astype(np.int32), "attention_mask": mask,
         "token_type_ids": np.zeros((n, length), np.int32)}
    return {"x": x, "y": rng.integers(0, 2, n).astype(np.int32), "g": rng.integers(0, 4, n).astype(np.int32),
            "w": np.ones(n, np.float32)}


def _max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u, np.float32) - np.asarray(v, np.float32)))),
                         a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


def _init(model, x0) -> dict:
    """Random variables with `model`'s structure, drawn with numpy (no XLA compilation): normal(0,
    0.2) weights, uniform(0.5, 1.5) norm scales and BatchNorm variances."""
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x0)
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name or "var" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        return jnp.asarray(rng.normal(0.0, 0.2, leaf.shape), leaf.dtype)

    return dict(jax.tree_util.tree_map_with_path(draw, shapes))


def _one_step(model, variables: dict, batch: dict, mode: str, loss_fn, extra=None) -> tuple:
    """One train step in `mode` from `variables`: (params, batch_stats, extra, metrics)."""
    fresh = jax.tree.map(jnp.copy, (variables, extra))  # steps donate the state
    state = create_state(model, fresh[0], optax.sgd(0.1, momentum=0.9), seed=3, extra=fresh[1])
    par = data_parallel(mode, loss_fn)
    state, metrics = par.step(par.place(state), par.put(batch))
    return state.params, state.batch_stats, state.extra, metrics


def _compare(model, batch: dict, loss_fn, extra=None, modes=("jit", "pmap"), reference_batch=None) -> dict:
    variables = _init(model, jax.tree.map(lambda v: v[:2], batch["x"]))
    ref = _one_step(model, variables, batch if reference_batch is None else reference_batch, "none", loss_fn, extra)
    out = {}
    for mode in modes:
        got = _one_step(model, variables, batch, mode, loss_fn, extra)
        out[mode] = {"params": _max_diff(got[0], ref[0]), "batch_stats": _max_diff(got[1], ref[1]),
                     "extra": _max_diff(got[2], ref[2]), "metrics": _max_diff(got[3], ref[3]),
                     "n_batch_stats": len(jax.tree.leaves(got[1]))}
    return out


def _counting(loss_fn) -> tuple:
    """`loss_fn` that counts its traces (it runs once per trace of the step)."""
    calls = {"n": 0}

    def counted(logits, batch, extra):
        calls["n"] += 1
        return loss_fn(logits, batch, extra)

    return counted, calls


def _predict_report(model) -> dict:
    """`predict` on 4 devices (batch 7 -> 8 rows, 22 examples: ragged last batch) against one jitted
    `eval_step` over all 22 examples on one device; what the eval function receives; its cache."""
    from gradtune_jax.train import loop
    from gradtune_jax.train.steps import eval_step

    x = _image_batch(22, 8, 7)["x"]
    state = create_state(model, _init(model, x[:2]), optax.sgd(0.1))
    assert jax.tree.leaves(state.batch_stats)  # eval mode uses the running statistics
    ref = jax.jit(eval_step)(*jax.device_put((state, x), jax.devices()[0]))
    original, real, seen = loop._eval_fn, loop._eval_fn(), []

    def recording(st, batch):
        seen.append({"shape": list(batch.shape), "batch_devices": len(batch.sharding.device_set),
                     "shard_rows": sorted({s.data.shape[0] for s in batch.addressable_shards}),
                     "spec": list(getattr(batch.sharding, "spec", ())),
                     "state_replicated": all(v.sharding.is_fully_replicated and len(v.sharding.device_set) == N_DEVICES
                                             for v in jax.tree.leaves(st.params))})
        return real(st, batch)

    loop._eval_fn = lambda: recording
    try:
        sizes = [real._cache_size()]
        for _ in range(2):
            got = loop.predict(state, x, batch_size=7)
            sizes.append(real._cache_size())
    finally:
        loop._eval_fn = original
    return {"shapes": [list(a.shape) for a in got], "logits": _max_diff(got[0], ref[0]),
            "feats": _max_diff(got[1], ref[1]), "calls": seen, "cache_growth": [b - a for a, b in zip(sizes, sizes[1:])]}


def _multi_device_report() -> dict:
    """Everything that needs several devices; run in the subprocess."""
    from gradtune_jax.data.digits import make_digits_waterbirds
    from gradtune_jax.methods.erm import init_state
    from gradtune_jax.models.classifier import Classifier
    from gradtune_jax.models.resnet import BasicBlock, ResNet
    from gradtune_jax.train.last_layer import HeadConfig, init_head, train_head
    from gradtune_jax.train.loop import fit, predict
    from gradtune_jax.train.recipe import Recipe
    from gradtune_jax.train.optim import OptimConfig
    from gradtune_jax.train.parallel import data_mesh
    from gradtune_jax.train.steps import group_dro_loss, weighted_ce

    assert jax.device_count() == N_DEVICES
    report: dict = {}
    tiny_resnet = Classifier(ResNet((1, 1), BasicBlock, width=4, small_input=True), 2)  # BN + downsample
    report["resnet"] = _compare(tiny_resnet, _image_batch(16, 8, 0, n_valid=13), weighted_ce)
    ragged = _image_batch(14, 8, 1)  # padded to 16 rows: equals the single-device step on that batch
    report["ragged_group_dro"] = _compare(create_model("tiny_cnn", 2), ragged, group_dro_loss(0.5),
                                          {"q": jnp.full((4,), 0.25)}, reference_batch=pad_batch(ragged, 4))
    small = dict(num_hidden_layers=1)
    report["bert"] = _compare(create_model("bert_tiny", 2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                           **small), _text_batch(8, 12, 2), weighted_ce)
    dropout = create_model("bert_tiny", 2, attention_probs_dropout_prob=0.0, **small)  # hidden dropout 0.1
    report["bert_dropout"] = _compare(dropout, _text_batch(8, 12, 3), weighted_ce, modes=("jit",))

    ds = make_digits_waterbirds(seed=0, size=8, counts={"train": (12, 3, 3, 8), "val": (2, 2, 2, 2),
                                                        "test": (2, 2, 2, 2)})  # 26 = 3 * 8 + 2: ragged
    erm = Recipe("tiny_cnn", epochs=2, batch_size=8, optim=OptimConfig("sgd", 0.05, 1e-4, 0.9, "cosine"),
                 parallel="none")
    x0 = ds.train.x[:2]

    def init_fn(model, seed: int) -> dict:
        return _init(model, x0)

    ref, _ = fit(init_state(ds, erm, 0, init_fn=init_fn), ds.train, erm, seed=0, progress=False)
    report["fit"] = {}
    for mode in ("jit", "pmap"):
        cfg = erm.replace(parallel=mode)
        loss_fn, calls = _counting(weighted_ce)
        got, _ = fit(init_state(ds, cfg, 0, init_fn=init_fn), ds.train, cfg, seed=0,
                     loss_fn=loss_fn, progress=False)
        report["fit"][mode] = {"diff": _max_diff((got.params, got.batch_stats), (ref.params, ref.batch_stats)),
                               "traces": calls["n"],  # the replicated state works with `predict`
                               "predict": _max_diff(predict(got, ds.test.x, 8), predict(ref, ds.test.x, 8))}
    par = data_parallel("jit")  # cached: the same jitted step every fit with this loss uses
    sizes = [par.step._cache_size()]
    for _ in range(2):
        state = par.place(init_state(ds, erm, 0, init_fn=init_fn))
        fit(state, ds.train, erm.replace(batch_size=6), seed=0, progress=False, step_fn=par.step,
            put=par.put)  # batch 6 padded to 8 rows on 4 devices
        sizes.append(par.step._cache_size())
    report["fit"]["jit_cache_growth"] = [b - a for a, b in zip(sizes, sizes[1:])]

    report["predict"] = _predict_report(tiny_resnet)

    rng = np.random.default_rng(5)
    feats, labels = rng.normal(size=(48, 6)).astype(np.float32), rng.integers(0, 3, 48)
    sharded = jax.device_put(feats, jax.sharding.NamedSharding(data_mesh(), jax.sharding.PartitionSpec("data")))
    head_cfg = HeadConfig(epochs=4, batch_size=7, optim=OptimConfig("sgd", 0.1, 1e-3, 0.9, "cosine"))
    head0 = init_head(6, 3, 0)
    ref_head = train_head(head0, feats, labels, head_cfg, 1)
    report["head"] = {}
    for mode in ("none", "jit", "pmap"):
        head = train_head(head0, sharded, labels, dataclasses.replace(head_cfg, parallel=mode), 1)
        report["head"][mode] = _max_diff(head, ref_head)
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"  # 2x faster compiles
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(N_DEVICES), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["resnet", "ragged_group_dro", "bert", "bert_dropout"])
def test_parallel_step_matches_single_device(report, case):
    for mode, diff in report[case].items():
        for what in ("params", "batch_stats", "extra", "metrics"):
            assert diff[what] < 1e-5, (case, mode, what, diff)
    if case == "resnet":
        assert all(d["n_batch_stats"] > 0 for d in report[case].values())


def test_fit_parallel_modes_match_single_device_and_compile_once(report):
    for mode in ("jit", "pmap"):
        assert report["fit"][mode]["diff"] < 1e-5 and report["fit"][mode]["predict"] < 1e-5, report["fit"]
        assert report["fit"][mode]["traces"] == 1, report["fit"]  # 2 epochs, ragged last batch
    # at most one new executable for the new batch shape, none for a second fit of the same model
    assert report["fit"]["jit_cache_growth"][0] <= 1 and report["fit"]["jit_cache_growth"][1] == 0


def test_predict_is_data_parallel_and_matches_single_device(report):
    r = report["predict"]
    assert r["shapes"] == [[22, 2], [22, 8]], r["shapes"]  # padding rows dropped
    assert r["logits"] < 1e-5 and r["feats"] < 1e-5, r
    assert len(r["calls"]) == 6, r["calls"]  # 2 predicts x ceil(22 / 8) batches
    for call in r["calls"]:  # batch size 7 rounded up to 8 rows, 2 per device
        assert call == {"shape": [8, 8, 8, 3], "batch_devices": N_DEVICES, "shard_rows": [2],
                        "spec": ["data"], "state_replicated": True}, call
    assert r["cache_growth"][0] <= 1 and r["cache_growth"][1] == 0, r["cache_growth"]


def test_train_head_parallel_modes_on_sharded_features(report):
    for mode, diff in report["head"].items():
        assert diff < 1e-5, (mode, diff)


def test_pad_batch_adds_weight_zero_rows():
    batch = {"x": {"ids": np.arange(10).reshape(5, 2)}, "y": np.arange(5), "w": np.ones(5, np.float32)}
    out = pad_batch(batch, 4)
    assert out["x"]["ids"].shape == (8, 2) and out["y"].tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert out["w"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert pad_batch(batch, 5) is batch


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="parallel must be one of"):
        data_parallel("ddp")


def test_mixed_precision_keeps_float32_params_and_loss():
    batch = _image_batch(8, 8, 0)
    model = create_model("tiny_cnn", 2, dtype=jnp.bfloat16)
    state = create_state(model, _init(model, batch["x"][:2]), optax.sgd(0.1))
    assert "bf16" in str(jax.make_jaxpr(train_step)(state, batch))
    new, metrics = jax.jit(train_step)(state, batch)
    for leaf in jax.tree.leaves((new.params, new.batch_stats)):
        assert leaf.dtype == jnp.float32
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


if __name__ == "__main__":
    print(json.dumps(_multi_device_report()))
