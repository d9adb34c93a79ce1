"""Agreement with MadryLab's traker 0.3.2 (exact gradients, lambda_reg > 0) on a committed fixture.

The fixture is made by `tools/make_trak_fixture.py`; this test needs neither torch nor traker.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from gradtune_jax.trak import compute_scores

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "trak_traker_mlp.npz")


def test_exact_scores_match_traker():
    z = np.load(FIXTURE)

    def apply_fn(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    checkpoints = [{k: z[f"{k}_{m}"] for k in ("w1", "b1", "w2", "b2")} for m in range(int(z["n_checkpoints"]))]
    scores = compute_scores(apply_fn, checkpoints, (z["x_train"], z["y_train"]), (z["x_target"], z["y_target"]),
                            proj_dim=None, lambda_reg=float(z["lambda_reg"]), progress=False)
    ref = z["scores"]
    assert scores.shape == ref.shape == (40, 10)
    rel = np.linalg.norm(scores - ref) / np.linalg.norm(ref)
    assert rel < 1e-4, rel
    assert np.abs(scores - ref).max() < 1e-4 * np.abs(ref).max()
