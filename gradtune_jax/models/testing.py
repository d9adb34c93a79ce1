"""Deterministic numpy weights and inputs for the parity checks against PyTorch references.

Used by `tools/make_parity_fixtures.py` (which runs torchvision / transformers on them and saves
`tests/fixtures/*_parity.npz`) and by `tests/test_models_parity.py` (which regenerates the same
weights, loads them through the public loaders and compares). Changing anything here invalidates
the committed fixtures: rerun the tool.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gradtune_jax.models.weights import flatten, unflatten

RESNET_NUM_CLASSES = 10
RESNET_IMAGE_SHAPE = (2, 64, 64, 3)  # NHWC
BERT_NUM_LABELS = 3
BERT_SEQ_LEN = 12
BERT_CONFIG = {
    "model_type": "bert", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 32, "type_vocab_size": 2, "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
}


def numpy_variables(model: Any, x_example: Any, seed: int = 0) -> dict:
    """Variables of `model` filled with numpy: kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 1),
    scales / running variances 1, biases / running means 0.

    Same structure, shapes and dtypes as `model.init`, without compiling it: on CPU, XLA takes
    tens of seconds to compile the threefry draws of a ResNet's `init`, which tests cannot afford.
    """
    abstract = jax.eval_shape(model.init, jax.random.key(0), x_example)
    rng = np.random.default_rng([seed, 4])
    flat = {}
    for path, leaf in flatten(abstract).items():
        name = path[-1]
        if name in ("kernel", "embedding"):
            std = 1.0 if name == "embedding" else 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
            value = rng.normal(0.0, std, leaf.shape)
        else:
            value = np.ones(leaf.shape) if name in ("scale", "var") else np.zeros(leaf.shape)
        flat[path] = value.astype(leaf.dtype)
    return unflatten(flat)


class _StateDict:
    """Fills a torch-style state dict in a fixed order from one seeded generator."""

    def __init__(self, seed: int, tag: int):
        self.rng = np.random.default_rng([seed, tag])
        self.state: dict[str, np.ndarray] = {}

    def normal(self, key: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> None:
        self.state[key] = self.rng.normal(mean, std, shape).astype(np.float32)

    def uniform(self, key: str, shape: tuple[int, ...], low: float, high: float) -> None:
        self.state[key] = self.rng.uniform(low, high, shape).astype(np.float32)

    def conv(self, name: str, c_out: int, c_in: int, k: int) -> None:
        self.normal(f"{name}.weight", (c_out, c_in, k, k), np.sqrt(2.0 / (c_in * k * k)))

    def batch_norm(self, name: str, c: int, gain: float = 1.0) -> None:
        self.uniform(f"{name}.weight", (c,), 0.5 * gain, 1.5 * gain)
        self.normal(f"{name}.bias", (c,), 0.1)
        self.normal(f"{name}.running_mean", (c,), 0.1)
        self.uniform(f"{name}.running_var", (c,), 0.5, 1.5)
        self.state[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

    def linear(self, name: str, c_out: int, c_in: int) -> None:
        self.normal(f"{name}.weight", (c_out, c_in), 1.0 / np.sqrt(c_in))
        self.normal(f"{name}.bias", (c_out,), 0.1)

    def layer_norm(self, name: str, c: int) -> None:
        self.uniform(f"{name}.weight", (c,), 0.5, 1.5)
        self.normal(f"{name}.bias", (c,), 0.1)


def resnet_state_dict(depth: int, num_classes: int = RESNET_NUM_CLASSES,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """A torchvision `resnet{depth}` state dict (same keys, shapes and order) of random weights.

    The last BatchNorm of each block gets a small scale so activations stay O(1) through depth.
    """
    sd = _StateDict(seed, depth)
    sd.conv("conv1", 64, 3, 7)
    sd.batch_norm("bn1", 64)
    bottleneck = depth == 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    c_in = 64
    for i, n_blocks in enumerate(blocks):
        planes = 64 * 2**i
        c_out = 4 * planes if bottleneck else planes
        for j in range(n_blocks):
            name = f"layer{i + 1}.{j}"
            if bottleneck:
                sd.conv(f"{name}.conv1", planes, c_in, 1)
                sd.batch_norm(f"{name}.bn1", planes)
                sd.conv(f"{name}.conv2", planes, planes, 3)
                sd.batch_norm(f"{name}.bn2", planes)
                sd.conv(f"{name}.conv3", c_out, planes, 1)
                sd.batch_norm(f"{name}.bn3", c_out, gain=0.3)
            else:
                sd.conv(f"{name}.conv1", planes, c_in, 3)
                sd.batch_norm(f"{name}.bn1", planes)
                sd.conv(f"{name}.conv2", planes, planes, 3)
                sd.batch_norm(f"{name}.bn2", planes, gain=0.3)
            if j == 0 and (i > 0 or c_in != c_out):
                sd.conv(f"{name}.downsample.0", c_out, c_in, 1)
                sd.batch_norm(f"{name}.downsample.1", c_out)
            c_in = c_out
    sd.linear("fc", num_classes, c_in)
    return sd.state


def resnet_images(seed: int = 0) -> np.ndarray:
    """`(2, 64, 64, 3)` float32 NHWC inputs."""
    return np.random.default_rng([seed, 1]).normal(size=RESNET_IMAGE_SHAPE).astype(np.float32)


def bert_state_dict(config: dict = BERT_CONFIG, num_labels: int = BERT_NUM_LABELS,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """A `BertForSequenceClassification` state dict (HF key names) of random weights."""
    sd = _StateDict(seed, 2)
    d, d_ff = config["hidden_size"], config["intermediate_size"]
    for name, rows in (("word", config["vocab_size"]), ("position", config["max_position_embeddings"]),
                       ("token_type", config["type_vocab_size"])):
        sd.normal(f"bert.embeddings.{name}_embeddings.weight", (rows, d), 1.0)
    sd.layer_norm("bert.embeddings.LayerNorm", d)
    for i in range(config["num_hidden_layers"]):
        layer = f"bert.encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            sd.linear(f"{layer}.attention.self.{proj}", d, d)
        sd.linear(f"{layer}.attention.output.dense", d, d)
        sd.layer_norm(f"{layer}.attention.output.LayerNorm", d)
        sd.linear(f"{layer}.intermediate.dense", d_ff, d)
        sd.linear(f"{layer}.output.dense", d, d_ff)
        sd.layer_norm(f"{layer}.output.LayerNorm", d)
    sd.linear("bert.pooler.dense", d, d)
    sd.linear("classifier", num_labels, d)
    return sd.state


def bert_inputs(config: dict = BERT_CONFIG, seed: int = 0) -> dict[str, np.ndarray]:
    """Two sequences of `BERT_SEQ_LEN` tokens (int32), the second padded after 8 tokens, two
    segments each."""
    rng = np.random.default_rng([seed, 3])
    input_ids = rng.integers(0, config["vocab_size"], (2, BERT_SEQ_LEN)).astype(np.int32)
    attention_mask = np.ones((2, BERT_SEQ_LEN), np.int32)
    attention_mask[1, 8:] = 0
    input_ids[1, 8:] = 0
    token_type_ids = np.zeros((2, BERT_SEQ_LEN), np.int32)
    token_type_ids[:, BERT_SEQ_LEN // 2:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids}


def import_torchvision():
    """`torchvision` for reference runs (tools/, benchmarks/; never at library run time) on a build
    whose C++ ops are missing (CPU torch + CUDA torchvision wheel): fake registrations of absent
    operators are skipped during the import (the models do not use them)."""
    import torch

    original = torch.library.register_fake

    def tolerant(*args, **kwargs):
        try:
            inner = original(*args, **kwargs)
        except RuntimeError:
            return lambda fn: fn
        if not callable(inner):
            return inner

        def decorator(fn):
            try:
                return inner(fn)
            except RuntimeError:
                return fn

        return decorator

    torch.library.register_fake = tolerant
    try:
        import torchvision
    finally:
        torch.library.register_fake = original
    return torchvision
