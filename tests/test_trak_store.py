"""TRAK feature store: SIGKILL mid-featurisation + resume, shards + finalise, keyed folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gradtune_jax.errors import UserError
from gradtune_jax.trak import compute_scores
from gradtune_jax.trak.store import FeatureStore
from tests.test_trak_kernels import make_data, make_params, mlp_apply

CKS = [make_params(0), make_params(1)]
KW = dict(proj_dim=8, lambda_reg=1e-2, seed=3, batch_size=4, progress=False)


def data():
    return make_data(22, 2), make_data(7, 3)  # 6 train chunks (last partial), 2 target chunks


KILLED = textwrap.dedent("""
    import os, signal
    from tests.test_trak_store import CKS, KW, data
    from tests.test_trak_kernels import mlp_apply
    from gradtune_jax.trak.store import FeatureStore
    train, targets = data()
    fs = FeatureStore.open(ROOT, CKS, train, targets, proj_dim=8, seed=3, batch_size=4)
    count = [0]
    def on_chunk(unit):
        count[0] += 1
        if count[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)
    fs.featurize(mlp_apply, CKS, train, targets, progress=False, on_chunk=on_chunk)
    raise SystemExit("not killed")
""")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    root = str(tmp_path / "store")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", f"ROOT = {root!r}\n" + KILLED], cwd=repo,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    train, targets = data()
    fs = FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4)
    assert len(fs.completed()) == 5 and len(fs.units()) == 16
    with pytest.raises(UserError, match="11 of 16 chunks"):
        fs.finalize(1e-2, progress=False)
    computed = []
    fs.featurize(mlp_apply, CKS, train, targets, progress=False, on_chunk=computed.append)
    assert len(computed) == 11 and not set(computed) & set(fs.units()[:5])  # resumed at the next chunk
    resumed = compute_scores(mlp_apply, CKS, train, targets, store=root, **KW)  # nothing left to compute
    fresh = compute_scores(mlp_apply, CKS, train, targets, store=str(tmp_path / "fresh"), **KW)
    np.testing.assert_array_equal(resumed, fresh)
    in_memory = compute_scores(mlp_apply, CKS, train, targets, **KW)
    np.testing.assert_allclose(resumed, in_memory, rtol=1e-4, atol=1e-5 * np.abs(in_memory).max())


def test_two_shards_and_finalise_equal_one_run(tmp_path):
    train, targets = data()
    one = compute_scores(mlp_apply, CKS, train, targets, store=str(tmp_path / "one"), **KW)
    root = str(tmp_path / "sharded")
    stores = [FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4) for _ in range(2)]
    assert stores[0].path == stores[1].path
    n0 = stores[0].featurize(mlp_apply, CKS, train, targets, shard=(0, 2), progress=False)
    assert stores[0].missing() and n0 == 8
    n1 = stores[1].featurize(mlp_apply, CKS, train, targets, shard=(1, 2), progress=False)
    assert n1 == 8 and not stores[1].missing()
    manifests = sorted(os.listdir(stores[0].path))
    assert "manifest-0of2.json" in manifests and "manifest-1of2.json" in manifests
    out = str(tmp_path / "scores.npy")
    scores, info = stores[0].finalize(1e-2, out=out, progress=False)
    np.testing.assert_array_equal(scores, one)
    np.testing.assert_array_equal(np.load(out), one)
    assert [k["method"] for k in info["kernel"]] == ["inverse", "inverse"]
    with pytest.raises(UserError, match="shard"):
        stores[0].featurize(mlp_apply, CKS, train, targets, shard=(2, 2), progress=False)


def test_store_keyed_by_everything_and_mismatch_refused(tmp_path):
    train, targets = data()
    root = str(tmp_path)
    base = FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4)
    others = [FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=4, batch_size=4),
              FeatureStore.open(root, CKS, train, targets, proj_dim=16, seed=3, batch_size=4),
              FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4, proj_type="rademacher"),
              FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4, wrt="head"),
              FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=8),
              FeatureStore.open(root, [make_params(0), make_params(2)], train, targets, proj_dim=8, seed=3,
                                batch_size=4),
              FeatureStore.open(root, CKS, make_data(22, 9), targets, proj_dim=8, seed=3, batch_size=4)]
    assert len({base.path, *(o.path for o in others)}) == 8
    # a folder whose meta.json disagrees with its configuration is refused, never reused
    meta = os.path.join(base.path, "meta.json")
    with open(meta) as f:
        saved = json.load(f)
    saved["seed"] = 99
    with open(meta, "w") as f:
        json.dump(saved, f)
    with pytest.raises(UserError, match="seed"):
        FeatureStore.open(root, CKS, train, targets, proj_dim=8, seed=3, batch_size=4)
    with pytest.raises(UserError, match="checkpoints differ"):
        others[0].featurize(mlp_apply, [make_params(5), make_params(1)], train, targets, progress=False)
