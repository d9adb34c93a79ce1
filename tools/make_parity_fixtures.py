"""Regenerate the parity fixtures `tests/fixtures/{resnet,bert}_parity.npz` with PyTorch.

Builds torchvision's resnet18 / resnet50 and transformers' BertForSequenceClassification (eval
mode) with the deterministic numpy weights of `gradtune_jax.models.testing`, runs them on its
fixed inputs and saves inputs, logits and features. The weights are not saved: the tests
regenerate them. Needs torch, torchvision and transformers (see docs/readme_models.md):

    python tools/make_parity_fixtures.py [--out tests/fixtures]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gradtune_jax.io import atomic_save_npz  # noqa: E402
from gradtune_jax.models import testing  # noqa: E402
from gradtune_jax.models.testing import import_torchvision  # noqa: E402


def resnet_reference(torch, torchvision) -> dict[str, np.ndarray]:
    """Logits and pooled features of torchvision resnet18/50 on `testing.resnet_images()`."""
    x_NHWC = testing.resnet_images()
    out = {"x": x_NHWC}
    for depth in (18, 50):
        model = getattr(torchvision.models, f"resnet{depth}")(num_classes=testing.RESNET_NUM_CLASSES)
        state = {k: torch.from_numpy(v) for k, v in testing.resnet_state_dict(depth).items()}
        model.load_state_dict(state, strict=True)
        model.eval()
        feats = {}
        model.avgpool.register_forward_hook(lambda m, i, o: feats.update(v=o.flatten(1)))
        with torch.no_grad():
            logits = model(torch.from_numpy(x_NHWC.transpose(0, 3, 1, 2).copy()))
        out[f"logits{depth}"] = logits.numpy()
        out[f"feats{depth}"] = feats["v"].numpy()
    return out


def bert_reference(torch) -> dict[str, np.ndarray]:
    """Logits and pooled feature of BertForSequenceClassification on `testing.bert_inputs()`."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(**testing.BERT_CONFIG, num_labels=testing.BERT_NUM_LABELS)
    config._attn_implementation = "eager"
    model = BertForSequenceClassification(config)
    state = {k: torch.from_numpy(v) for k, v in testing.bert_state_dict().items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    inputs = testing.bert_inputs()
    with torch.no_grad():
        torch_inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
        logits = model(**torch_inputs).logits
        pooled = model.bert(**torch_inputs).pooler_output
    return {**inputs, "logits": logits.numpy(), "pooled": pooled.numpy()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("tests", "fixtures"))
    args = parser.parse_args(argv)

    import torch
    import transformers

    torchvision = import_torchvision()
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__}
    os.makedirs(args.out, exist_ok=True)
    for name, arrays in (("resnet", resnet_reference(torch, torchvision)),
                         ("bert", bert_reference(torch))):
        path = os.path.join(args.out, f"{name}_parity.npz")
        atomic_save_npz(path, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
