"""features: the frozen ViT-B/32 backbone run once per image and view, cached for the ViT heads.

The study ran the 87M-parameter backbone on every image at every epoch of every head fit; its output
never changes (the backbone is frozen), so cytoops computes it once here and the heads train on it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from tqdm import tqdm

from cytoops import augment
from cytoops.params import FeaturesParams
from cytoops.params import load as load_params

RANDOM_BACKBONE_WARNING = (
    "WARNING: no ViT weights given (features.vit_weights is null): the ViT-B/32 backbone is RANDOMLY "
    "initialised, so the ViT models' scores say nothing about a pretrained ViT. Set features.vit_weights to "
    "vit-keras' ViT-B_32_imagenet21k+imagenet2012.npz (nothing is downloaded)."
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    views: tuple[str, ...]
    values: np.ndarray  # (n_views, n_wells, 768) float32
    pretrained: bool
    weights: str  # the weights file, or "random"


def to_vit_input(images: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) images scaled ~0..1 -> channels-last in [-1, 1], as vit-keras' preprocessing expects."""
    return np.clip(np.moveaxis(images.astype(np.float32), 1, -1), 0.0, 1.0) * 2.0 - 1.0


def compute(
    bank: augment.ViewBank, p: FeaturesParams, vit_layers: int = 12, progress: bool = True
) -> Features:
    import keras
    import tensorflow as tf

    from cytoops import models

    if bank.images.shape[2] != 3:
        raise ValueError(f"the ViT backbone takes 3 channels; the plate has {bank.images.shape[2]}")
    keras.utils.set_random_seed(p.seed)  # the random backbone, when no weights are given, is seeded
    backbone, pretrained = models.build_backbone(
        models.ModelParams(vit_weights=p.vit_weights, vit_layers=vit_layers), image_size=bank.images.shape[-1]
    )
    n_views, n_wells = bank.images.shape[:2]
    out = np.empty((n_views, n_wells, models.VIT_FEATURES), dtype=np.float32)
    # one graph for the forward pass: 1.5x faster than Keras' eager call here, the same bits (tested)
    forward = tf.function(lambda x: backbone(x, training=False))
    steps = [(v, s) for v in range(n_views) for s in range(0, n_wells, p.batch_size)]
    for v, s in tqdm(steps, desc="ViT features", unit="batch", disable=not progress, file=sys.stderr):
        x = to_vit_input(bank.images[v, s : s + p.batch_size])
        out[v, s : s + p.batch_size] = np.asarray(forward(x))
    return Features(bank.views, out, pretrained, p.vit_weights or "random")


def save(f: Features, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, values=f.values, views=np.array(f.views), pretrained=f.pretrained, weights=f.weights)


def load(path: Path) -> Features:
    with np.load(path) as z:
        return Features(
            views=tuple(str(v) for v in z["views"]),
            values=z["values"],
            pretrained=bool(z["pretrained"]),
            weights=str(z["weights"]),
        )


def command(
    views: Path = typer.Option(..., "--views", help="The view bank written by `cytoops augment`."),
    out: Path = typer.Option(..., "--out", help="Where to write the cached features (.npz)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a param: --set features.vit_weights=ViT-B_32.npz"
    ),
) -> None:
    """Run the frozen ViT-B/32 once on every well and view; the ViT heads train on these features."""
    p = load_params(params_file, overrides).features
    if p.vit_weights is None:
        log.warning(RANDOM_BACKBONE_WARNING)
    f = compute(augment.load(views), p)
    save(f, out)
    log.info(
        f"features: {f.values.shape[0]} views x {f.values.shape[1]} wells x {f.values.shape[2]} "
        f"({f.weights}) -> {out}"
    )
