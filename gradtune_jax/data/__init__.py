"""Data layer: the `GroupDataset` representation, validation halves, samplers, loaders."""
from gradtune_jax.data.dataset import GroupDataset, Split, select, take
from gradtune_jax.data.digits import make_digits_waterbirds
from gradtune_jax.data.digits_celeba import make_digits_celeba
from gradtune_jax.data.images import LazyImages, prefetch_batches
from gradtune_jax.data.registry import DEFAULT_DATASET, dataset_names, load_dataset, register_dataset
from gradtune_jax.data.samplers import balanced_indices, balanced_weights, epoch_indices
from gradtune_jax.data.splits import heldout_split

__all__ = ["GroupDataset", "Split", "select", "take", "LazyImages", "prefetch_batches", "make_digits_waterbirds",
           "make_digits_celeba",
           "DEFAULT_DATASET", "dataset_names", "load_dataset", "register_dataset", "balanced_indices",
           "balanced_weights", "epoch_indices", "heldout_split"]
