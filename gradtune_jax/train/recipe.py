"""The training recipe: one object that says how every model of a run is trained and evaluated.

A `Recipe` holds the backbone (and its kwargs), the initialisation (random, or a pretrained
weights file / folder), the image pipeline (train transform = augmentation, eval transform =
resize/crop/normalise inside the model's eval apply), the optimizer and schedule, the sampler,
epochs, batch size, precision and parallel mode. Every path that trains a model - ERM, the
retraining baselines, early checkpoints, uLA, the TRAK ensemble, retraining after removal, LDS -
builds its state with `create_train_state(recipe, ...)` and trains it with
`loop.fit(state, split, recipe, ...)`, which applies `recipe.pipeline.train` itself: there is no
other way in, so no path can drop a field. A method that needs a variant derives it with
`recipe.replace(...)` (JTT's weighted sampler, SUBG's epochs) and records it.

`recipe.describe()` is the JSON record (with the weights file's SHA-256) that `results.json`
stores for every model a row trained; `recipe.fingerprint()` keys every cache built from it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from gradtune_jax.data.dataset import take
from gradtune_jax.data.transforms import ImagePipeline
from gradtune_jax.errors import UserError
from gradtune_jax.models import create_model, init_variables
from gradtune_jax.train.optim import OptimConfig, cached_optimizer
from gradtune_jax.train.parallel import MODES
from gradtune_jax.train.state import TrainState, create_state

SAMPLERS = ("uniform", "class_balanced", "group_balanced", "weighted")

# `init_fn(model, seed) -> variables`: an initialisation that replaces the recipe's own (uLA's
# fine-tuning starts from its self-supervised backbone); recorded by the caller.
InitFn = Callable[[Any, int], dict]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained and evaluated (see the module docstring)."""

    model: str = "small_cnn"
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None  # pretrained backbone: torchvision .safetensors/.npz or a HF BERT folder
    pipeline: ImagePipeline | None = None  # train augmentation and eval preprocessing (images)
    optim: OptimConfig = OptimConfig()
    sampler: str = "class_balanced"
    epochs: int = 10
    batch_size: int = 64
    mixed_precision: bool = False  # bf16 compute, fp32 params and loss
    parallel: str = "jit"  # "jit" | "pmap" | "none": see train/parallel.py
    checkpoint_every: int = 1  # epochs; 0 saves only at the end
    eval_batch_size: int = 512

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.parallel not in MODES:
            raise ValueError(f"parallel must be one of {MODES}, got {self.parallel!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"epochs and batch sizes must be positive, got epochs={self.epochs}, "
                             f"batch_size={self.batch_size}, eval_batch_size={self.eval_batch_size}")
        object.__setattr__(self, "model_kwargs", tuple(sorted(dict(self.model_kwargs).items())))

    @property
    def compute_dtype(self) -> Any:
        return jnp.bfloat16 if self.mixed_precision else jnp.float32

    def replace(self, **changes) -> Recipe:
        """A copy with fields changed; `optim` may be given as a dict of OptimConfig changes."""
        if isinstance(changes.get("optim"), dict):
            changes["optim"] = dataclasses.replace(self.optim, **changes["optim"])
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict:
        """JSON record of the recipe: every field, the init source with the weights' SHA-256."""
        d = dataclasses.asdict(self)
        d["model_kwargs"] = {k: repr(v) for k, v in self.model_kwargs}
        d["init"] = ({"source": "weights", "path": os.path.abspath(self.weights),
                      "sha256": weights_digest(self.weights)} if self.weights else {"source": "random"})
        del d["weights"]
        return d

    def fingerprint(self) -> str:
        """Short hash of `describe()` without the weights path (the content hash stands for it)."""
        d = self.describe()
        d["init"] = {k: v for k, v in d["init"].items() if k != "path"}
        return digest(d)


def digest(obj: Any) -> str:
    """16 hex digits of the SHA-256 of `obj` as canonical JSON (cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_digest(path: str) -> str:
    """SHA-256 of a weights file, or of a folder's files (relative names and bytes, sorted)."""
    if not os.path.exists(path):
        raise UserError(f"--weights {path}: no such file or folder")
    p = os.path.abspath(path)
    files = [p] if os.path.isfile(p) else sorted(
        os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs)
    stamp = tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
    return _digest_files(p, stamp)


@functools.lru_cache(maxsize=32)
def _digest_files(root: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for f, _, _ in stamp:
        if f != root:
            h.update(os.path.relpath(f, root).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(functools.partial(fh.read, 1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def build_model(recipe: Recipe, n_classes: int):
    """The recipe's `Classifier` with `n_classes` outputs (bf16 compute under mixed precision)."""
    try:
        return create_model(recipe.model, n_classes, dtype=recipe.compute_dtype, **dict(recipe.model_kwargs))
    except ValueError as e:
        raise UserError(f"--model: {e}") from None


def recipe_variables(recipe: Recipe, model, x_example: Any, seed: int) -> dict:
    """Initial variables of `model` as the recipe says: random (seeded), or the pretrained
    backbone in `recipe.weights` with a fresh seeded head."""
    if recipe.weights is None:
        return init_variables(model, x_example, seed)
    return _load_weights(recipe, model, x_example, seed)


def _load_weights(recipe: Recipe, model, x_example: Any, seed: int) -> dict:
    """`recipe.weights` for `model`: a Flax msgpack backbone (`models.weights.save_backbone`, any
    backbone), torchvision ResNet weights (resnet*) or a Hugging Face BERT folder (bert*)."""
    weights_digest(recipe.weights)  # a clear error when missing
    n_out = model.num_classes
    if recipe.weights.endswith(".msgpack"):
        from gradtune_jax.models.weights import load_backbone

        return load_backbone(recipe.weights, init_variables(model, x_example, seed))
    if recipe.model.startswith("resnet"):
        from gradtune_jax.models.resnet import load_torchvision_weights

        depth = int("".join(c for c in recipe.model[len("resnet"):].split("_")[0] if c.isdigit()) or 50)
        return load_torchvision_weights(recipe.weights, depth=depth, num_classes=n_out, seed=seed)
    if recipe.model.startswith("bert"):
        from gradtune_jax.models.bert import load_hf_bert

        return load_hf_bert(recipe.weights, num_labels=n_out, seed=seed)[1]
    raise UserError(f"--weights {recipe.weights}: for {recipe.model!r} give a .msgpack backbone "
                    "(models.weights.save_backbone); torchvision/HF weights are for resnet*/bert* models")


@functools.lru_cache(maxsize=64)
def apply_fn(model, pipeline: ImagePipeline | None) -> Callable:
    """One apply function per (model, pipeline): states of equal recipes share it, so a jitted
    step traced for one run is reused by the next (JTT, removal curves, LDS). Eval-mode inputs go
    through `pipeline.eval`; train inputs arrive augmented by `loop.fit`."""
    if pipeline is None:
        return model.apply

    def apply(variables, x, train: bool = False, **kwargs):
        return model.apply(variables, x if train else pipeline.eval(x), train=train, **kwargs)

    return apply


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def create_train_state(recipe: Recipe, n_classes: int, x_example: Any, seed: int, *, n_train: int,
                       extra: Any = None, init_fn: InitFn | None = None) -> TrainState:
    """A fresh train state of `recipe` for `n_classes` outputs; the learning-rate schedule spans
    `recipe.epochs` epochs of `n_train` examples. `x_example`: a batch (or array) of inputs with
    a leading axis (two rows are used). `init_fn` replaces the recipe's initialisation (uLA)."""
    model = build_model(recipe, n_classes)
    x0 = take(x_example, np.arange(min(2, _num(x_example))))
    variables = init_fn(model, seed) if init_fn else recipe_variables(recipe, model, x0, seed)
    total = recipe.epochs * steps_per_epoch(n_train, recipe.batch_size)
    state = create_state(model, variables, cached_optimizer(recipe.optim, total), seed=seed, extra=extra)
    return state.replace(apply_fn=apply_fn(model, recipe.pipeline))


def _num(x: Any) -> int:
    from gradtune_jax.data.dataset import num_examples

    return num_examples(x)


__all__ = ["Recipe", "SAMPLERS", "InitFn", "OptimConfig", "build_model", "recipe_variables", "apply_fn",
           "create_train_state", "steps_per_epoch", "digest", "weights_digest"]
