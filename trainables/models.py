"""Models by name."""

from __future__ import annotations

from torch import nn

from trainables.config import ModelConfig


def build_model(cfg: ModelConfig, n_features: int, n_classes: int) -> nn.Module:
    """An MLP: LINEAR-RELU per hidden width, then a LINEAR to class logits (softmax in the loss)."""
    layers: list[nn.Module] = []
    width = n_features
    for h in cfg.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
