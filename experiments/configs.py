"""Experiment configs as Python: `get_config(dataset)` returns the per-dataset preset.

Presets follow the GradTune paper's Table 3 (ERM and last-layer recipes); the embedded default
`digits` uses a small CNN trained from scratch. Every field can be overridden from the CLI.
"""
from __future__ import annotations

import dataclasses

from gradtune_jax.data.transforms import ImagePipeline
from gradtune_jax.methods.erm import ERMConfig
from gradtune_jax.methods.gradtune import GradTuneConfig
from gradtune_jax.train.last_layer import HeadConfig
from gradtune_jax.train.loop import FitConfig
from gradtune_jax.train.optim import OptimConfig

VISION_HEAD = HeadConfig(epochs=500, batch_size=32, optim=OptimConfig("sgd", 3e-3, 1e-4, 0.0, "constant"))
TEXT_HEAD = HeadConfig(epochs=500, batch_size=16,
                       optim=OptimConfig("adamw", 1e-5, 1e-4, 0.0, "constant", decay_kernels_only=True))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    dataset: str
    erm: ERMConfig
    gradtune: GradTuneConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset_kwargs: dict = dataclasses.field(default_factory=dict)
    waterbirds_like: bool = False  # print the train-weighted average too


def _erm(model, name, lr, schedule, bs, epochs, momentum=0.9, decay_kernels_only=False,
         pipeline=None) -> ERMConfig:
    return ERMConfig(model=model, pipeline=pipeline, fit=FitConfig(
        epochs=epochs, batch_size=bs, sampler="class_balanced",
        optim=OptimConfig(name, lr, 1e-4, momentum, schedule, decay_kernels_only)))


# Real image datasets: RandomResizedCrop(224, 0.7-1) + flip in training, resize 256 + centre crop
# 224 in eval, ImageNet normalisation; loaders decode at 256 (`image_size`).
IMAGENET = ImagePipeline(crop=224, resize=256)


def scaled_pipeline(image_size: int) -> ImagePipeline:
    """The ImageNet pipeline for images loaded at `image_size` (crop = 224/256 of it)."""
    return ImagePipeline(crop=max(1, round(image_size * 224 / 256)), resize=image_size)


_PRESETS = {
    # Embedded default: small CNN from scratch; lr/epochs chosen on the validation split.
    "digits": lambda: ExperimentConfig("digits", _erm("small_cnn", "sgd", 1e-2, "cosine", 64, 30),
                                       GradTuneConfig(head=VISION_HEAD), waterbirds_like=True),
    # GradTune Table 3 (ERM momentum 0.9 as in the DFR/SELF reference code; fine-tuning momentum 0).
    "waterbirds": lambda: ExperimentConfig("waterbirds", _erm("resnet50", "sgd", 3e-3, "cosine", 32, 100,
                                                                        pipeline=IMAGENET),
                                           GradTuneConfig(head=VISION_HEAD), waterbirds_like=True,
                                           dataset_kwargs={"image_size": 256}),
    "celeba_blond": lambda: ExperimentConfig("celeba_blond", _erm("resnet50", "sgd", 3e-3, "cosine", 100, 20,
                                                                            pipeline=IMAGENET),
                                             GradTuneConfig(head=dataclasses.replace(VISION_HEAD, batch_size=100)),
                                             dataset_kwargs={"image_size": 256}),
    "multinli": lambda: ExperimentConfig("multinli", _erm("bert", "adamw", 1e-5, "linear", 16, 10, 0.0, True),
                                         GradTuneConfig(head=TEXT_HEAD)),
    "civilcomments": lambda: ExperimentConfig("civilcomments",
                                              _erm("bert", "adamw", 1e-5, "linear", 16, 10, 0.0, True),
                                              GradTuneConfig(head=TEXT_HEAD)),
}
_PRESETS["celeba_age"] = lambda: dataclasses.replace(_PRESETS["celeba_blond"](), dataset="celeba_age")
_PRESETS["civilcomments_wilds"] = lambda: dataclasses.replace(_PRESETS["civilcomments"](), dataset="civilcomments_wilds")
_PRESETS["features"] = lambda: dataclasses.replace(_PRESETS["digits"](), dataset="features", waterbirds_like=False)


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_config(dataset: str = "digits") -> ExperimentConfig:
    """The preset for `dataset` (a fresh object each call)."""
    if dataset not in _PRESETS:
        raise ValueError(f"no preset for dataset {dataset!r}; expected one of {preset_names()}")
    return _PRESETS[dataset]()
