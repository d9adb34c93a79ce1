"""Multi-process JAX (gradtune_jax.distributed, gradtune_jax.launch): 2 local processes x 2 fake CPU
devices (gloo collectives on localhost) against 1 process x 4 devices.

One worker script (below) trains a tiny CNN with ERM (checkpointing every epoch), predicts, and
computes TRAK scores; it runs once as a 2-process job through the launcher and once as a single
4-device process, each writing `result.npz` (from process 0 only). A third run restores the
checkpoint the 2-process job wrote in one process (1 device) and computes TRAK scores from it.
The tests compare those files. (TRAK is compared with the 1-device run, not the 4-device one:
per-example gradients through a convolution on a batch sharded over several devices are wrong
on XLA:CPU in jax 0.10.2, so the multi-process path featurises on one device per process.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradtune_jax.launch import launch, worst

ROOT = Path(__file__).resolve().parents[1]
XLA_FLAGS = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"  # faster compiles

WORKER = textwrap.dedent('''
    import os, sys
    import numpy as np
    from gradtune_jax import distributed as D

    mode, out = sys.argv[1], sys.argv[2]
    multi = D.initialize()  # from the launcher's environment; a no-op in a plain process
    import jax
    from gradtune_jax.data.digits import make_digits_waterbirds
    from gradtune_jax.methods.erm import init_state
    from gradtune_jax.train.checkpoint import Checkpointer
    from gradtune_jax.train.loop import fit, predict
    from gradtune_jax.train.optim import OptimConfig
    from gradtune_jax.train.parallel import data_parallel
    from gradtune_jax.train.recipe import Recipe
    from gradtune_jax.trak.scores import compute_scores

    assert jax.process_count() == (2 if multi else 1), (multi, jax.devices())
    assert mode == "restore" or jax.device_count() == 4, jax.devices()
    counts = {"train": (48, 8, 8, 32), "val": (12, 12, 8, 8), "test": (16, 16, 8, 8)}
    ds = make_digits_waterbirds(seed=0, size=8, counts=counts)
    # 96 train rows, batch 22 (not a multiple of 4 devices): every batch is padded, the last is ragged
    recipe = Recipe("tiny_cnn", epochs=2, batch_size=22, checkpoint_every=1, eval_batch_size=30,
                    optim=OptimConfig("sgd", 0.05, 1e-4, 0.9, "cosine"))
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                         jax.tree_util.tree_leaves_with_path(D.to_host(tree))}
    def trak(state, out):
        """TRAK scores (all parameters, 16 projections) of 70 train rows x 12 test rows, computed in
        memory and through the feature store (one shard per process)."""
        variables = D.to_host({"params": state.params, "batch_stats": state.batch_stats})

        def apply_fn(params, x):
            return state.apply_fn({"params": params, "batch_stats": variables["batch_stats"]}, x, train=False)[0]

        args = (apply_fn, [variables["params"]], (ds.train.x[:70], ds.train.y[:70]), (ds.test.x[:12], ds.test.y[:12]))
        kw = dict(proj_dim=16, lambda_reg=1e-2, seed=0, batch_size=16, progress=False)
        in_memory = np.asarray(compute_scores(*args, **kw, out=os.path.join(out, "scores.npy")))
        stored = np.asarray(compute_scores(*args, **kw, store=os.path.join(out, "store")))
        return np.stack([in_memory, stored])

    if mode == "restore":  # read a checkpoint (written by another job) into this job's layout
        state = data_parallel("jit").place(init_state(ds, recipe, 0))
        restored, meta = Checkpointer(sys.argv[3]).restore(state)
        scores = trak(restored, out)
        if D.is_primary():
            np.savez(os.path.join(out, "restored.npz"), epoch=meta["epoch"], scores=scores,
                     **{"p" + k: v for k, v in flat((restored.params, restored.batch_stats)).items()})
        sys.exit(0)
    state, history = fit(init_state(ds, recipe, 0), ds.train, recipe, seed=0,
                         workdir=os.path.join(out, "ckpt"), progress=False)
    logits, feats = predict(state, ds.test.x, recipe.eval_batch_size)
    scores = trak(state, out)
    if D.is_primary():
        np.savez(os.path.join(out, "result.npz"), logits=logits, feats=feats, scores=scores,
                 loss=np.array([h["loss"] for h in history]),
                 **{"p" + k: v for k, v in flat((state.params, state.batch_stats)).items()})
''')


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices), "XLA_FLAGS": XLA_FLAGS,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _single(script: Path, *args: str, devices: int = 4) -> None:
    env = {k: v for k, v in _env(devices).items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                        "JAX_PROCESS_ID"))}
    r = subprocess.run([sys.executable, str(script), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Folders of the 2-process job, the 1-process x 4-device run and the 1-process restore."""
    root = tmp_path_factory.mktemp("multihost")
    script = root / "worker.py"
    script.write_text(WORKER)
    dirs = {name: root / name for name in ("two", "one", "restore")}
    for d in dirs.values():
        d.mkdir()
    code = launch([str(script), "train", str(dirs["two"])], n=2, devices=2, env=_env(2), cwd=str(ROOT))
    assert code == 0, f"2-process job exited with {code}"
    _single(script, "train", str(dirs["one"]))
    _single(script, "restore", str(dirs["restore"]), str(dirs["two"] / "ckpt"), devices=1)
    return dirs


def _params(npz) -> dict:
    return {k: npz[k] for k in npz.files if k.startswith("p")}


def test_erm_fit_two_processes_equals_one_process_four_devices(runs):
    two, one = np.load(runs["two"] / "result.npz"), np.load(runs["one"] / "result.npz")
    p2, p1 = _params(two), _params(one)
    assert sorted(p2) == sorted(p1) and len(p1) > 4
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], atol=1e-5, err_msg=k)
    np.testing.assert_allclose(two["loss"], one["loss"], atol=1e-5)
    # predict on the global mesh: every test row, gathered in order
    assert two["logits"].shape == one["logits"].shape == (48, 2)
    np.testing.assert_allclose(two["logits"], one["logits"], atol=1e-5)
    np.testing.assert_allclose(two["feats"], one["feats"], atol=1e-5)
    # the run moved away from the initialisation (a no-op fit would also "agree")
    assert two["loss"][0] != two["loss"][1]


def test_trak_scores_two_processes_equal_one_process(runs):
    """TRAK of the trained model: 2 processes (rows split, or feature-store shards 0/2 and 1/2, one
    device each) against 1 process on 1 device scoring the same parameters (restored from the
    2-process checkpoint, so bit-identical)."""
    two, one = np.load(runs["two"] / "result.npz"), np.load(runs["restore"] / "restored.npz")
    assert two["scores"].shape == one["scores"].shape == (2, 70, 12)  # (in memory, feature store)
    scale = np.abs(one["scores"]).max()
    assert scale > 0
    np.testing.assert_allclose(two["scores"], one["scores"], atol=1e-5 * scale)
    np.testing.assert_allclose(two["scores"][1], two["scores"][0], atol=1e-5 * scale)
    np.testing.assert_array_equal(np.load(runs["two"] / "scores.npy"), two["scores"][0])  # process 0 wrote it
    manifests = sorted(p.name for p in (runs["two"] / "store").glob("trak-*/manifest-*.json"))
    assert manifests == ["manifest-0of2.json", "manifest-1of2.json"]


def test_checkpoint_written_by_two_processes_restores_in_one(runs):
    restored, trained = np.load(runs["restore"] / "restored.npz"), np.load(runs["two"] / "result.npz")
    assert int(restored["epoch"]) == 2
    p_r, p_t = _params(restored), _params(trained)
    assert sorted(p_r) == sorted(p_t)
    for k in p_t:
        np.testing.assert_array_equal(p_r[k], p_t[k], err_msg=k)


def test_launcher_reports_the_worst_exit_code_and_stops_the_others(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['JAX_PROCESS_ID'] == '1':\n    sys.exit(3)\n"
                      "time.sleep(600)\n")
    assert launch([str(script)], n=2, devices=1, grace=0.5, env=_env(1)) == 3
    assert worst([0, 0]) == 0 and worst([0, -15]) == 143 and worst([2, 1]) == 2


def test_pmap_refuses_several_processes_and_initialize_checks_arguments(tmp_path):
    from gradtune_jax import distributed as D
    from gradtune_jax.errors import UserError

    with pytest.raises(UserError, match="all three or none"):
        D.initialize("localhost:1234", 2, None)
    with pytest.raises(UserError, match="process id"):
        D.initialize("localhost:1234", 2, 2)
    assert D.initialize("localhost:1234", 1, 0) is False  # one process: nothing to start
    script = tmp_path / "pmap.py"
    script.write_text("from gradtune_jax import distributed as D\nD.initialize()\n"
                      "from gradtune_jax.train.parallel import data_parallel\n"
                      "from gradtune_jax.errors import UserError\n"
                      "try:\n    data_parallel('pmap')\nexcept UserError as e:\n    print('refused:', e)\n"
                      "    raise SystemExit(5)\n")
    assert launch([str(script)], n=2, devices=1, env=_env(1), cwd=str(ROOT)) == 5


def test_table1_quick_two_processes_writes_the_same_table(tmp_path):
    """`python -m gradtune_jax.launch -n 2 -- -m experiments.table1 --quick` (ERM on the global
    mesh of 2 processes x 2 devices, features gathered, fine-tuning on every process) writes the
    table1.csv of a plain single-process run, from process 0 only."""
    two, one = tmp_path / "two", tmp_path / "one"
    cli = ["-m", "experiments.table1", "--quick", "--no-progress"]
    assert launch([*cli, "--out", str(two)], n=2, devices=2, env=_env(2), cwd=str(ROOT)) == 0
    r = subprocess.run([sys.executable, *cli, "--out", str(one)], env=_env(1), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (one / "table1.csv").read_text()
    assert table.count("\n") == 4 and (two / "table1.csv").read_text() == table
    assert (two / "results.json").exists() and not list(two.glob(".*.tmp"))
