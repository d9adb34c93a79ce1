"""Build the traker reference fixture `tests/fixtures/trak_traker_mlp.npz` (needs torch + traker).

A tiny tanh MLP (5 -> 6 -> 3 classes, 57 parameters), two checkpoints whose weights come from
numpy, 40 train and 10 target examples; MadryLab's `traker==0.3.2` on CPU with `NoOpProjector`
(exact gradients), `lambda_reg > 0`, float32. The test recomputes the scores with
`gradtune_jax.trak.compute_scores(..., proj_dim=None)` from the stored inputs only.

    python tools/make_trak_fixture.py [--out tests/fixtures/trak_traker_mlp.npz]
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np

D_IN, D_HID, N_CLASSES, N_TRAIN, N_TARGETS, N_CKPTS = 5, 6, 3, 40, 10, 2
LAMBDA_REG = 1e-3


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs, labels and the weights of every checkpoint, in JAX layout (kernels `(in, out)`)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.normal(size=(N_TRAIN, D_IN)).astype(np.float32),
        "y_train": rng.integers(0, N_CLASSES, N_TRAIN).astype(np.int64),
        "x_target": rng.normal(size=(N_TARGETS, D_IN)).astype(np.float32),
        "y_target": rng.integers(0, N_CLASSES, N_TARGETS).astype(np.int64),
    }
    for m in range(N_CKPTS):
        arrays[f"w1_{m}"] = rng.normal(0, 0.7, (D_IN, D_HID)).astype(np.float32)
        arrays[f"b1_{m}"] = rng.normal(0, 0.1, D_HID).astype(np.float32)
        arrays[f"w2_{m}"] = rng.normal(0, 0.7, (D_HID, N_CLASSES)).astype(np.float32)
        arrays[f"b2_{m}"] = rng.normal(0, 0.1, N_CLASSES).astype(np.float32)
    return arrays


def traker_scores(arrays: dict[str, np.ndarray], lambda_reg: float) -> np.ndarray:
    """Exact (NoOpProjector) traker scores for the fixture's MLP ensemble."""
    import torch
    from trak import TRAKer
    from trak.projectors import NoOpProjector

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, D_HID), torch.nn.Tanh(), torch.nn.Linear(D_HID, N_CLASSES))
    model.eval()

    def state(m: int) -> dict:
        t = lambda a: torch.tensor(np.ascontiguousarray(a))  # noqa: E731
        return {"0.weight": t(arrays[f"w1_{m}"].T), "0.bias": t(arrays[f"b1_{m}"]),
                "2.weight": t(arrays[f"w2_{m}"].T), "2.bias": t(arrays[f"b2_{m}"])}

    train = (torch.tensor(arrays["x_train"]), torch.tensor(arrays["y_train"]))
    target = (torch.tensor(arrays["x_target"]), torch.tensor(arrays["y_target"]))
    with tempfile.TemporaryDirectory() as save_dir:
        traker = TRAKer(model=model, task="image_classification", train_set_size=N_TRAIN,
                        save_dir=save_dir, device="cpu", projector=NoOpProjector(device="cpu"),
                        use_half_precision=False, lambda_reg=lambda_reg)
        for m in range(N_CKPTS):
            traker.load_checkpoint(state(m), model_id=m)
            traker.featurize(batch=train, num_samples=N_TRAIN)
        traker.finalize_features()
        for m in range(N_CKPTS):
            traker.start_scoring_checkpoint(exp_name="fixture", checkpoint=state(m), model_id=m,
                                            num_targets=N_TARGETS)
            traker.score(batch=target, num_samples=N_TARGETS)
        return np.array(traker.finalize_scores(exp_name="fixture"), np.float32)


def main() -> None:
    import trak

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/trak_traker_mlp.npz")
    args = ap.parse_args()
    arrays = make_inputs()
    scores = traker_scores(arrays, LAMBDA_REG)
    np.savez_compressed(args.out, **arrays, scores=scores, lambda_reg=np.float64(LAMBDA_REG),
                        n_checkpoints=np.int64(N_CKPTS), traker_version=np.array(trak.__version__))
    print(f"wrote {args.out}: scores {scores.shape}, |scores| max {np.abs(scores).max():.4g}")


if __name__ == "__main__":
    main()
