"""How the `digits_celeba` recipe was fixed: ERM's validation behaviour only (no fine-tuning method).

    python tools/digits_celeba_recipe.py '{"cue": 0.5, "erm": {"epochs": 10}, "seeds": [0, 1, 2]}'

Builds `make_digits_celeba(**data options)` (data seed 0 unless "seed" is given), trains the
`digits_celeba` preset's ERM (epochs / lr / batch size overridable under "erm") per ERM seed and
prints one JSON line per seed: validation average and worst-group accuracy, per-group validation and
train accuracy, and the mean last-layer gradient norm of each group on the held-out half D. It
never runs GradTune, Random finetune or any other method, and never reads the test split.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np

from experiments.configs import get_config
from gradtune_jax.data.digits_celeba import make_digits_celeba
from gradtune_jax.kernels.gradnorm import last_layer_grad_norms
from gradtune_jax.methods.erm import erm_feature_set
from gradtune_jax.methods.features import evaluate_head


def main(argv: list[str]) -> int:
    opts = json.loads(argv[0]) if argv else {}
    erm = opts.pop("erm", {})
    seeds = opts.pop("seeds", [0])
    ds = make_digits_celeba(**opts)
    recipe = get_config("digits_celeba").recipe
    recipe = recipe.replace(epochs=erm.get("epochs", recipe.epochs), batch_size=erm.get("bs", recipe.batch_size),
                            optim=dataclasses.replace(recipe.optim, lr=erm.get("lr", recipe.optim.lr)))
    for seed in seeds:
        t0 = time.perf_counter()
        fs = erm_feature_set(ds, recipe, seed, None, progress=False).fs
        val, train, D = evaluate_head(fs.head, fs.ds.val), evaluate_head(fs.head, fs.ds.train), fs.D
        norms_N = np.asarray(last_layer_grad_norms(fs.head, D.x, D.y))
        print(json.dumps({
            "data": opts, "erm": {"epochs": recipe.epochs, "lr": recipe.optim.lr, "bs": recipe.batch_size},
            "seed": seed, "secs": round(time.perf_counter() - t0, 1),
            "val_avg": round(100 * val["avg"], 1), "val_wga": round(100 * val["wga"], 1),
            "val_groups": [round(100 * v, 1) for v in val["group_acc"]],
            "train_groups": [round(100 * v, 1) for v in train["group_acc"]],
            "D_gradnorm_by_group": [round(float(norms_N[D.g == g].mean()), 3) for g in range(4)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
