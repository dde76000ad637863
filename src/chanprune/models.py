"""Build a model by name from the torchvision or timm zoo (random init: nothing is downloaded)."""

from __future__ import annotations

import difflib
import warnings

import torch

from .errors import InputError


def _torchvision_names() -> list[str]:
    try:
        import torchvision
    except ImportError:
        return []
    return torchvision.models.list_models(module=torchvision.models)


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:
        return []
    return timm.list_models()


def load_model(name: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The model and its default (C, H, W) input size. torchvision names win over timm's."""
    tv = _torchvision_names()
    if name in tv:
        import torchvision

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, weights=None)
        return model.eval(), (3, 299, 299) if name.startswith("inception") else (3, 224, 224)
    tm = _timm_names()
    if name in tm:
        import timm

        model = timm.create_model(name, pretrained=False)
        return model.eval(), tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    if not tv and not tm:
        raise InputError(
            f"cannot build {name!r}: neither torchvision nor timm is installed "
            "(pip install 'chanprune[models]')"
        )
    close = difflib.get_close_matches(name, tv + tm, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown model {name!r} (not a torchvision or timm model name){hint}")
