"""Models: backbones returning features, wrapped by `Classifier` with a linear `head`."""
from gradtune_jax.models.classifier import HEAD, Classifier
from gradtune_jax.models.registry import create_model, init_variables

__all__ = ["HEAD", "Classifier", "create_model", "init_variables"]
