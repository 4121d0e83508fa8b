"""serving: what every served cytoops model shares (the recipe, the one input check, the MLflow edge) and the
served CNN.

`mlflow models serve -m models:/cytoops-<slug>@champion` serves what `register` logs: a `python_model` (a
`ServedModel`; for a CNN, `ThumbnailModel` around the trained Keras model, an artifact `model.keras`; the
other families are built by `cytoops.servable`). It takes the thumbnails as a plate holds them, raw (uint16 or
float, the values a TIFF holds), with every channel of the training plate in its order, shaped (N, C, H, W)
or (N, H, W, C); a 3-D array is one image, channels first when both readings fit ((3, 64, 64) is one
3-channel 64 x 64 image); any square size from `MIN_SIZE` px. `check_thumbnails` refuses anything else with
the reason (a 400 whose message says why, under `mlflow models serve`). It resizes them to the model's size
as wrangle does (area averaging to shrink, linear to enlarge), scales each channel with the training plate's
constants (its 0.1th and 99.9th percentiles -> 0 and 1, stored with the model; the median over plates when
it was trained on several) and returns one row per image with `p_responder`. `cytoops predict` scales a
whole new plate by its own percentiles instead (`ServedModel.plate_probabilities`).

`recipe`, `check_thumbnails` and `scaled` are the pure core; `ServedModel.predict` is the MLflow edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from cytoops import machine, wrangle
from cytoops.plate import resize

KERAS_ARTIFACT = "keras_model"
OUTPUT_COLUMN = "p_responder"
# The smallest thumbnail a served model reads. The study's thumbnails are 64 px wells holding 10-50 cells,
# a nucleus a few px across; below 16 px there is no cell to see (the profile smooths with sigma 1 px and
# splits nuclei 2 px apart; a 3x3 convolution has next to nothing to slide over), and enlarging to the model's
# size invents the morphology it reads: a 1 x 1 "image" is one value repeated.
MIN_SIZE = 16
# The largest pixel magnitude: 2**32, the range of the 8-, 16- and 32-bit integers a TIFF holds. A float
# thumbnail beyond it is no measurement (fluorescence floats are 0-1 or 0-65535); -1e30 is refused.
MAX_ABS = float(2**32)


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
    """(N, C, H, W) or (N, H, W, C) of square thumbnails (or one image without N) -> (N, C, S, S). A 3-D
    array is one image; when both readings fit, channels first wins."""
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


_KINDS = {"b": "booleans", "U": "text", "S": "bytes", "O": "mixed or missing values", "c": "complex numbers"}


def check_thumbnails(x, n_channels: int) -> np.ndarray:
    """The one input check of every served model and of `cytoops predict`: raw thumbnails -> (N, C, S, S)
    float32, or ValueError saying why not. Refused: anything but integers or floats (booleans, text, mixed
    values), a shape that is not (N, C, S, S) or (N, S, S, C) (one image without N) of square images with
    the model's channel count, images smaller than `MIN_SIZE`, NaN or infinite values, values beyond
    +-`MAX_ABS`."""
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
    try:
        x = np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"thumbnails must be one rectangular array of numbers ({err})") from None
    if x.dtype.kind not in "iuf":
        what = _KINDS.get(x.dtype.kind, f"dtype {x.dtype}")
        raise ValueError(f"thumbnails must be pixel values (integers or floats); got {what}")
    x = channels_first(x, n_channels)
    side = x.shape[-1]
    if side < MIN_SIZE:
        raise ValueError(
            f"thumbnails are {side}x{side} px: a served model reads images of at least {MIN_SIZE}x{MIN_SIZE}"
        )
    if x.size == 0:
        return x.astype(np.float32)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("thumbnails hold NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if hi > MAX_ABS or lo < -MAX_ABS:
        worst = hi if hi > MAX_ABS else lo
        raise ValueError(
            f"thumbnails hold {worst:.3g}: pixel values must lie within +-{MAX_ABS:.3g} (2**32), the "
            "range of the 8-, 16- and 32-bit integers a TIFF holds"
        )
    return x.astype(np.float32)


def resized(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, S, S) -> (N, C, size, size) as a plate is read (area averaging to shrink, linear to enlarge)."""
    return np.stack([resize(image, size) for image in x]) if len(x) else x.reshape(0, x.shape[1], size, size)


def scaled(raw, r: Recipe) -> np.ndarray:
    """Raw thumbnails -> (N, C, S, S) float32 in the training plate's channel order: checked, resized to the
    model's size and scaled by the training plate's constants."""
    x = resized(check_thumbnails(raw, len(r.plate_channels)), r.image_size)
    return wrangle.scale(x, r.lo, r.hi)


def to_model_input(raw: np.ndarray, r: Recipe) -> np.ndarray:
    """Raw thumbnails -> the CNN's input (N, S, S, C) float32: resized, scaled as the training plate was,
    the CNN's channels in its order."""
    return cnn_input(scaled(raw, r), r)


def cnn_input(x: np.ndarray, r: Recipe) -> np.ndarray:
    """Scaled (N, C, S, S) in the plate's channels -> the CNN's (N, S, S, C) in its channels."""
    picks = [r.plate_channels.index(c) for c in r.channels]
    return np.moveaxis(x[:, picks], 1, -1).astype(np.float32)


def invalid_input(err: ValueError):
    """MLflow's own exception for a bad request: `mlflow models serve` answers 400 with this message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE)


class ServedModel(mlflow.pyfunc.PythonModel):
    """What every served family shares: raw thumbnails in (`check_thumbnails`), P(responder) out.

    A family implements `scaled_probabilities` (thumbnails already resized and scaled, (N, C, S, S) in the
    training plate's channels); `predict` is the MLflow edge (a bad input is an `MlflowException` whose
    message says why); `plate_probabilities` scores a whole plate scaled by its own percentiles
    (`cytoops predict`)."""

    recipe: Recipe

    def scaled_probabilities(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        try:
            x = scaled(model_input, self.recipe)
        except ValueError as err:
            raise invalid_input(err) from None
        return pd.DataFrame({OUTPUT_COLUMN: self.scaled_probabilities(x)})

    def plate_scaled(self, images: np.ndarray) -> np.ndarray:
        """One plate's raw images (N, C, S, S) in the training plate's channels: checked, resized, and scaled
        by this plate's own percentiles, as wrangle scales a plate."""
        x = resized(check_thumbnails(images, len(self.recipe.plate_channels)), self.recipe.image_size)
        return wrangle.normalize_images(x) if len(x) else x

    def plate_probabilities(self, images: np.ndarray, roles=None, memo=None) -> tuple[np.ndarray, str]:
        """(P(responder), how it was normalized: '' unless the family says) for one plate's raw images
        (`plate_scaled`); `roles` (layout.csv's role per image, or None) lets a family normalize to the
        plate's controls; `memo` (a dict the caller keeps across models) lets a family that measures the
        plate (the profile) measure it once."""
        x = self.plate_scaled(images)
        return (self.scaled_probabilities(x) if len(x) else np.zeros(0)), ""


class ThumbnailModel(ServedModel):
    """A served Keras CNN (an artifact, `model.keras`): the study's CNNs (two logits: softmax) or the
    multitask CNN (one logit per cytokine: the sigmoid of `column`, its champion cytokine's)."""

    head = "two_logits"  # class defaults: models pickled before these attributes existed read them
    column = 0

    def __init__(self, r: Recipe, head: str = "two_logits", column: int = 0):
        if head not in ("two_logits", "sigmoid"):
            raise ValueError(f"unknown CNN head {head!r}: two_logits or sigmoid")
        self.recipe = r
        self.head, self.column = head, int(column)
        self.model = None

    def load_context(self, context) -> None:
        machine.import_tensorflow()  # a server imports TensorFlow here: the grid's kernels
        import keras

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(responder) for inputs already made as the CNN reads them (N, S, S, C)."""
        if len(x) == 0:
            return np.zeros(0)
        out = np.asarray(self.model.predict(np.asarray(x, dtype=np.float32), verbose=0, batch_size=256))
        if self.head == "two_logits":
            return probability(out)
        return 1.0 / (1.0 + np.exp(-out[:, self.column].astype(np.float64)))

    def scaled_probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(cnn_input(x, self.recipe))


def save_keras(model, folder: Path) -> Path:
    """The trained CNN without its optimizer state, as the artifact the pyfunc loads."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    path = Path(folder) / "model.keras"
    copy.save(path)
    return path
