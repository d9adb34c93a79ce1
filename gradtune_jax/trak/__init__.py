"""TRAK data attribution in JAX: `compute_scores(apply_fn, checkpoints, train, targets, ...)`.

Pure kernels (margin, projected per-example gradients, kernel inverse) live in `kernels.py` and
`projection.py`; the streaming ensemble scorer in `scores.py`; LDS in `lds.py`.
"""
from gradtune_jax.trak.kernels import featurize, kernel_inverse, margin, out_to_loss
from gradtune_jax.trak.projection import materialize_projection, project
from gradtune_jax.trak.scores import compute_scores, featurize_dataset

__all__ = ["compute_scores", "featurize_dataset", "featurize", "kernel_inverse", "margin", "out_to_loss",
           "project", "materialize_projection"]
