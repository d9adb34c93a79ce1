"""ResNet-18/50 (v1.5, torchvision layout and padding) as backbones, and a torchvision loader.

The backbone returns globally pooled features `(N, 512)` (ResNet-18) or `(N, 2048)` (ResNet-50);
`Classifier` adds the `head` (torchvision's `fc`). Inputs are NHWC float images, already
normalised. Padding is explicit, as in torchvision: flax's `'SAME'` pads stride-2 convolutions
`(0, 1)` where torch pads `(1, 1)`.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.errors import UserError
from gradtune_jax.models.classifier import HEAD, Classifier
from gradtune_jax.models.weights import flatten, linear_head, unflatten

STAGE_SIZES = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
PAD1 = ((1, 1), (1, 1))
# torchvision initialises convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, strides: int, name: str, dtype: Any) -> nn.Conv:
    padding = PAD1 if kernel == 3 else "VALID"
    return nn.Conv(features, (kernel, kernel), strides=strides, padding=padding, use_bias=False,
                   kernel_init=_conv_init, dtype=dtype, name=name)


def _norm(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        name=name)


def _shortcut(x, out_features: int, strides: int, train: bool, dtype: Any):
    """Identity, or torchvision's `downsample` (1x1 conv + BN) when the shape changes."""
    if strides == 1 and x.shape[-1] == out_features:
        return x
    x = _conv(out_features, 1, strides, "downsample_conv", dtype)(x)
    return _norm(train, "downsample_bn", dtype)(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34); output width `features`."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = _conv(self.features, 3, self.strides, "conv1", self.dtype)(x)
        y = nn.relu(_norm(train, "bn1", self.dtype)(y))
        y = _conv(self.features, 3, 1, "conv2", self.dtype)(y)
        y = _norm(train, "bn2", self.dtype)(y)
        return nn.relu(y + _shortcut(x, self.features, self.strides, train, self.dtype))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 convolutions; output width `4 * features`."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = 4 * self.features
        y = _conv(self.features, 1, 1, "conv1", self.dtype)(x)
        y = nn.relu(_norm(train, "bn1", self.dtype)(y))
        y = _conv(self.features, 3, self.strides, "conv2", self.dtype)(y)
        y = nn.relu(_norm(train, "bn2", self.dtype)(y))
        y = _conv(out, 1, 1, "conv3", self.dtype)(y)
        y = _norm(train, "bn3", self.dtype)(y)
        return nn.relu(y + _shortcut(x, out, self.strides, train, self.dtype))


class ResNet(nn.Module):
    """ResNet backbone: `(N, H, W, 3) -> feats (N, 8 * width)` (basic) or `(N, 32 * width)`.

    `small_input=True` uses a 3x3 stride-1 stem and no max-pool (for 16-64 px images); `width`
    scales every stage (64 is the standard model, 8 gives tiny test models); `dtype` is the
    compute dtype (params stay float32).
    """

    stage_sizes: Sequence[int]
    block_cls: Any = Bottleneck
    width: int = 64
    small_input: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC, train: bool = False):
        h = x_NHWC.astype(self.dtype)
        if self.small_input:
            h = _conv(self.width, 3, 1, "conv1", self.dtype)(h)
        else:
            h = nn.Conv(self.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                        kernel_init=_conv_init, dtype=self.dtype, name="conv1")(h)
        h = nn.relu(_norm(train, "bn1", self.dtype)(h))
        if not self.small_input:
            h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=PAD1)
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                h = self.block_cls(self.width * 2**i, strides, dtype=self.dtype,
                                   name=f"layer{i + 1}_{j}")(h, train=train)
        return jnp.mean(h, axis=(1, 2))


def resnet(depth: int, dtype: Any = jnp.float32, width: int = 64,
           small_input: bool = False) -> ResNet:
    """ResNet-18 or ResNet-50 backbone."""
    if depth not in STAGE_SIZES:
        raise UserError(f"ResNet depth {depth} is not supported; expected one of {sorted(STAGE_SIZES)}")
    block = BasicBlock if depth == 18 else Bottleneck
    return ResNet(STAGE_SIZES[depth], block, width=width, small_input=small_input, dtype=dtype)


# ---------------------------------------------------------------- torchvision weights


def _read_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, Any]
                     ) -> tuple[dict[str, np.ndarray], str]:
    """`(torchvision key -> numpy array, source name for messages)`."""
    if isinstance(path_or_state_dict, Mapping):
        return {k: np.asarray(v) for k, v in path_or_state_dict.items()}, "state dict"
    path = os.fspath(path_or_state_dict)
    if not os.path.isfile(path):
        raise UserError(f"{path}: weights file not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file
            return dict(load_file(path)), path
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}, path
    except Exception as e:  # a corrupt file: report it on one line
        raise UserError(f"{path}: cannot read weights ({type(e).__name__}: {e})".splitlines()[0]) from e
    raise UserError(f"{path}: expected a .safetensors or .npz file of torchvision weights")


_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_LEAF = {"weight": ("params", None), "bias": ("params", "bias"),
         "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _flax_path(key: str) -> tuple[str, tuple[str, ...], bool] | None:
    """Torchvision key -> (collection, path in the backbone, is a conv/linear kernel); None: skip."""
    m = _BLOCK_KEY.match(key)
    prefix, rest = ((f"layer{m[1]}_{m[2]}",), m[3]) if m else ((), key)
    rest = rest.replace("downsample.0.", "downsample_conv.").replace("downsample.1.", "downsample_bn.")
    *modules, leaf = rest.split(".")
    if leaf == "num_batches_tracked":
        return None
    if leaf not in _LEAF or len(modules) != 1:
        return "unexpected", (key,), False
    collection, name = _LEAF[leaf]
    is_conv = modules[0].startswith(("conv", "downsample_conv"))
    if name is None:
        name = "kernel" if is_conv else "scale"
    return collection, (*prefix, modules[0], name), name == "kernel"


@functools.lru_cache(maxsize=None)
def _expected_shapes(depth: int) -> tuple[dict[tuple[str, ...], tuple[int, ...]], int]:
    """`({(collection, *backbone path): shape}, feature dim)` of a standard ResNet-`depth`."""
    abstract = jax.eval_shape(Classifier(resnet(depth), 1).init, jax.random.key(0),
                              jnp.zeros((1, 32, 32, 3)))
    expected = {(coll, *path): leaf.shape for coll, tree in abstract.items()
                for path, leaf in flatten(tree["backbone"]).items()}
    return expected, abstract["params"][HEAD]["kernel"].shape[0]


def load_torchvision_weights(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                             depth: int = 50, num_classes: int = 2, seed: int = 0) -> dict:
    """Torchvision ResNet weights -> Flax variables `{"params", "batch_stats"}` for
    `Classifier(resnet(depth), num_classes)`.

    Accepts a `.safetensors` / `.npz` file with torchvision key names or a dict of arrays. The
    checkpoint's `fc` becomes the `head`; when it is absent or has a different class count, a
    fresh head is initialised from `seed`. Raises `UserError` on missing/unexpected keys or
    shape mismatches.
    """
    state, src = _read_state_dict(path_or_state_dict)
    expected, feat_dim = _expected_shapes(depth)

    flat: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in state.items():
        if key in ("fc.weight", "fc.bias"):
            continue
        target = _flax_path(key)
        if target is None:
            continue
        collection, path, is_kernel = target
        if (collection, *path) not in expected:
            raise UserError(f"{src}: unexpected key {key!r} for a torchvision ResNet-{depth}")
        arr = np.asarray(value, dtype=np.float32)
        if is_kernel and arr.ndim == 4:
            arr = arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if arr.shape != expected[(collection, *path)]:
            raise UserError(f"{src}: key {key!r} has shape {tuple(np.shape(value))}, which does not "
                            f"match a torchvision ResNet-{depth}")
        flat[(collection, *path)] = arr
    missing = sorted(expected.keys() - flat.keys())
    if missing:
        raise UserError(f"{src}: missing key {_torch_key(missing[0])!r} for a torchvision "
                        f"ResNet-{depth} ({len(missing)} missing)")

    variables = unflatten({(coll, "backbone", *path): arr for (coll, *path), arr in flat.items()})
    variables["params"][HEAD] = linear_head(state, src, "fc", feat_dim, num_classes, seed)
    return variables


def _torch_key(flax_key: tuple[str, ...]) -> str:
    """Flax `(collection, *path)` -> the torchvision key, for error messages."""
    collection, *modules, leaf = flax_key
    name = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
            "var": "running_var"}[leaf]
    parts = [m.replace("_", ".", 1) if m.startswith("layer") else m for m in modules]
    key = ".".join([*parts, name])
    return key.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
