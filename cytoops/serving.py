"""serving: a champion CNN as an MLflow pyfunc that answers P(responder) for raw thumbnails.

`mlflow models serve -m models:/cytoops-<slug>@champion` serves what `register` logs: a `python_model`
(`ThumbnailModel`) around the trained Keras CNN (an artifact, `model.keras`). It takes the thumbnails as a
plate holds them, raw (uint16 or float, the values a TIFF holds), with every channel of the training plate in
its order, shaped (N, C, H, W) or (N, H, W, C) (one image without N also works), any square size; it resizes
them to the model's size as wrangle does (area averaging to shrink, linear to enlarge), scales each channel
with the training plate's constants (its 0.1th and 99.9th percentiles -> 0 and 1, stored with the model; the
median over plates when it was trained on several), keeps the channels the CNN saw, and returns one row per
image with `p_responder`. `cytoops predict` scales a whole new plate by its own percentiles instead
(`probabilities`).

`recipe` and `to_model_input` are the pure core; `ThumbnailModel` is the MLflow edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from cytoops import wrangle
from cytoops.plate import resize

KERAS_ARTIFACT = "keras_model"
OUTPUT_COLUMN = "p_responder"


def probability(logits: np.ndarray) -> np.ndarray:
    """P(responder) from a champion's two logits."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e[:, 1] / e.sum(axis=1)


@dataclass(frozen=True)
class Recipe:
    """How raw thumbnails become the CNN's input: stored with the model."""

    plate_channels: tuple[str, ...]  # the channels a posted thumbnail has, in order
    channels: tuple[str, ...]  # the channels the CNN saw (train.cnn_channels)
    image_size: int
    lo: tuple[float, ...]  # per plate channel: the value scaled to 0
    hi: tuple[float, ...]  # ... and to 1

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def recipe(scaling: pd.DataFrame, plate_channels, channels, image_size: int) -> Recipe:
    """A Recipe from wrangle's scaling table (one row per plate and channel): the median over plates."""
    plate_channels = tuple(plate_channels)
    if scaling.empty:
        raise ValueError(
            "wrangle wrote no scaling constants (scaling.csv): rerun wrangle (dvc repro -f wrangle)"
        )
    missing = [c for c in channels if c not in plate_channels]
    if missing:
        raise ValueError(
            f"the CNN's channels {missing} are not among the plate's channels {list(plate_channels)}"
        )
    med = scaling.groupby("channel")[["lo", "hi"]].median()
    absent = [c for c in plate_channels if c not in med.index]
    if absent:
        raise ValueError(f"scaling.csv has no constants for channels {absent}: rerun wrangle")
    return Recipe(
        plate_channels,
        tuple(channels),
        int(image_size),
        tuple(float(med.loc[c, "lo"]) for c in plate_channels),
        tuple(float(med.loc[c, "hi"]) for c in plate_channels),
    )


def channels_first(x: np.ndarray, n_channels: int) -> np.ndarray:
    """(N, C, H, W) or (N, H, W, C) of square thumbnails (or one image without N) -> (N, C, S, S)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(
            f"thumbnails must be shaped (N, C, H, W) or (N, H, W, C) with C = {n_channels}; got {x.shape}"
        )
    if x.shape[1] == n_channels and x.shape[2] == x.shape[3]:
        return x
    if x.shape[3] == n_channels and x.shape[1] == x.shape[2]:
        return np.moveaxis(x, -1, 1)
    raise ValueError(
        f"thumbnails shaped {x.shape}: expected square images with {n_channels} channels, "
        f"(N, {n_channels}, S, S) or (N, S, S, {n_channels})"
    )


def to_model_input(raw: np.ndarray, r: Recipe) -> np.ndarray:
    """Raw thumbnails -> the CNN's input (N, S, S, C) float32: resized, scaled as the training plate was,
    the CNN's channels in its order."""
    x = channels_first(raw, len(r.plate_channels)).astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("thumbnails hold NaN or infinite values")
    x = np.stack([resize(image, r.image_size) for image in x]) if len(x) else x
    x = wrangle.scale(x, r.lo, r.hi)
    picks = [r.plate_channels.index(c) for c in r.channels]
    return np.moveaxis(x[:, picks], 1, -1).astype(np.float32)


class ThumbnailModel(mlflow.pyfunc.PythonModel):
    """The served champion: raw thumbnails in, P(responder) out."""

    def __init__(self, r: Recipe):
        self.recipe = r
        self.model = None

    def load_context(self, context) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(responder) for inputs already made as the CNN reads them (N, S, S, C) (`cytoops predict`)."""
        if len(x) == 0:
            return np.zeros(0)
        return probability(self.model.predict(np.asarray(x, dtype=np.float32), verbose=0, batch_size=256))

    def predict(self, context, model_input, params=None):
        raw = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else model_input
        return pd.DataFrame({OUTPUT_COLUMN: self.probabilities(to_model_input(raw, self.recipe))})


def save_keras(model, folder: Path) -> Path:
    """The trained CNN without its optimizer state, as the artifact the pyfunc loads."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    path = Path(folder) / "model.keras"
    copy.save(path)
    return path


def load_vit(model_uri: str):
    """A logged ViT model (its head) put together with its backbone: one Keras model reading images as
    `features.to_vit_input` makes them. The backbone is rebuilt from the weights file the run used (or, for a
    random backbone, from its seed), so nothing logged holds vit-keras' Lambda layers (no need for
    `safe_mode=False`)."""
    import keras
    import mlflow

    from cytoops import models

    meta = (mlflow.models.get_model_info(model_uri).metadata or {}).get("cytoops", {})
    backbone_meta = meta.get("backbone")
    if not backbone_meta:
        raise ValueError(f"{model_uri} is not a cytoops ViT head (no backbone reference in its metadata)")
    head = mlflow.keras.load_model(model_uri)
    weights = None if backbone_meta["weights"] == "random" else backbone_meta["weights"]
    if weights is None:
        keras.utils.set_random_seed(int(backbone_meta["seed"]))  # as the features stage seeded it
    size = int(backbone_meta["image_size"])
    backbone, _ = models.build_backbone(
        models.ModelParams(vit_weights=weights, vit_layers=int(backbone_meta["layers"])), image_size=size
    )
    inputs = keras.Input(shape=(size, size, 3))
    return keras.Model(inputs, head(backbone(inputs)), name=f"{head.name}_with_backbone")
