"""Pure kernels on arrays (no dataset imports): selection scores and fine-tuning set selection."""
from gradtune_jax.kernels.gradnorm import last_layer_grad_norms, last_layer_grad_norms_closed_form
from gradtune_jax.kernels.select import gradtune_select, random_select

__all__ = ["last_layer_grad_norms", "last_layer_grad_norms_closed_form", "gradtune_select", "random_select"]
