"""gradtune-jax: robustness to spurious correlations without group labels, in JAX/Flax.

Layers (each imports only from those before it): `data` -> `models` -> `train` -> `kernels` ->
`methods`; the `experiments` package on top runs the papers' tables.
"""
__version__ = "0.1.0"

from gradtune_jax.kernels import gradtune_select, last_layer_grad_norms, random_select  # noqa: E402

__all__ = ["__version__", "last_layer_grad_norms", "gradtune_select", "random_select"]
