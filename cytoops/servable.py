"""servable: one place that makes a fitted image predictor of any family an MLflow pyfunc.

Every served family has the CNN champion's contract (`cytoops.serving`): raw thumbnails in, checked by
`serving.check_thumbnails`, resized and scaled as the training plate was (its `serving.Recipe`), one
`p_responder` per image out; channels, size and family in the logged model's metadata. `build` returns what
`mlflow.pyfunc.log_model` (or `save_model`) takes (`Servable.log_kwargs()`); every fitted state is an
artifact in plain formats (a Keras file, JSON), never a pickle of its own.

| family | what is served | its fitted state (`build`'s `fitted`) |
| --- | --- | --- |
| wide_cnn, deep_cnn, cnn_all | the Keras CNN (two logits) | the Keras model |
| multitask_cnn | the Keras CNN, sigmoid of the champion cytokine's logit | `Multitask(model, cytokines)` |
| vit_linear, vit_240k, vit_500k | the frozen ViT-B/32 and the trained head | `Vit(head, backbone)` |
| profile | segmentation, cp-measure, normalization, the L1 model | `Profile(model, normalization)` |
| cell_count | nuclei per thumbnail, the baseline's logistic regression | `CellCount(linear, counter)` |

A ViT's backbone is not copied into the model (ViT-B/32 weights are ~350 MB a cytokine): the model names the
weights file it was trained with and its SHA-256; the file must be on the serving machine at that path, or
given at load time (`mlflow.pyfunc.load_model(uri, model_config={"vit_weights": path})`); a random backbone
(no weights) is rebuilt from its seed. The image-blind baselines cannot be served (`NOT_SERVABLE` says why).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops import machine, profile, serving
from cytoops.linear import Linear
from cytoops.params import ARCHITECTURES, CNN_KINDS
from cytoops.serving import Recipe, ServedModel

FAMILIES: dict[str, str] = {  # servable family -> how it is served: every architecture, by its kind
    **{name: "cnn" if kind in CNN_KINDS else kind for name, kind in ARCHITECTURES.items()},
    "cell_count": "cell_count",
}
NOT_SERVABLE: dict[str, str] = {
    "prevalence": "it reads no image (a constant: the training wells' prevalence)",
    "position": "it reads the well's row and column, not its thumbnail",
    "embeddings": "it reads the plate's embeddings.csv (the study's Part 1 features), not a thumbnail",
}
VIT_HEAD = "vit_head"
STATE = "state"  # the JSON artifact of the profile and cell-count models
COUNTERS = ("segmentation", "peaks")  # baselines.count_cells: the profile's nuclei, or nuclear peaks
_REQUIREMENTS = {
    "cnn": ("keras", "tensorflow", "tensorflow-cpu"),
    "multitask": ("keras", "tensorflow", "tensorflow-cpu"),
    "vit": ("keras", "tensorflow", "tensorflow-cpu", "vit-keras"),
    "profile": ("scikit-image", "cp-measure", "pycytominer", "scikit-learn", "scipy"),
    "cell_count": ("scikit-image", "scikit-learn", "scipy"),
}


def servable_families() -> tuple[str, ...]:
    """The families `build` can serve."""
    return tuple(FAMILIES)


def kind_of(family: str) -> str:
    """The kind of a servable family; ValueError naming the family and why when it cannot be served."""
    if family in FAMILIES:
        return FAMILIES[family]
    if family in NOT_SERVABLE:
        raise ValueError(f"{family} cannot be served: {NOT_SERVABLE[family]}")
    raise ValueError(f"unknown family {family!r}: servable families are {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class Multitask:
    model: object  # the Keras multitask CNN (one logit per cytokine)
    cytokines: tuple[str, ...]  # its output columns, in order


@dataclass(frozen=True)
class Vit:
    head: object  # the trained Keras head (backbone features -> sigmoid)
    backbone: dict  # weights ("random" or a vit-keras .npz path), seed, layers, image_size


@dataclass(frozen=True)
class Profile:
    model: profile.ProfileModel
    normalization: profile.Normalization  # the training plate's (`profile.training_normalization`)


@dataclass(frozen=True)
class CellCount:
    linear: Linear  # P(responder) from one column, the cell count (`baselines.fit_linear`)
    counter: str  # how cells are counted: the profile's segmentation, or nuclear peaks


@dataclass(frozen=True)
class Servable:
    family: str
    python_model: ServedModel
    artifacts: dict[str, str]  # name -> file, under the folder given to `build`
    metadata: dict = field(default_factory=dict)
    pip_requirements: tuple[str, ...] = ()

    def log_kwargs(self) -> dict:
        """Keyword arguments of `mlflow.pyfunc.log_model`/`save_model`: the model, its artifacts, metadata
        (under "cytoops") and pinned requirements (add name, params, tags at the call)."""
        return {
            "python_model": self.python_model,
            "artifacts": dict(self.artifacts),
            "metadata": {"cytoops": self.metadata},
            "pip_requirements": list(self.pip_requirements),
        }


def build(family: str, fitted, recipe: Recipe, folder: Path, *, cytokine: str | None = None) -> Servable:
    """A servable model of a fitted `family` predictor trained on a plate read by `recipe`; its artifacts
    are written under `folder` (keep it until the model is logged). `cytokine` picks a multitask CNN's
    output. ValueError (one line) when the family cannot be served or `fitted` is not its state."""
    kind = kind_of(family)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    python_model, artifacts, meta = _BUILDERS[kind](family, fitted, recipe, folder, cytokine)
    metadata = {
        "family": family,
        "serving": recipe.as_dict(),
        "input": f"raw thumbnails (N, C, S, S) or (N, S, S, C), C = {len(recipe.plate_channels)} "
        f"({', '.join(recipe.plate_channels)}), square, S >= {serving.MIN_SIZE}",
        "output": serving.OUTPUT_COLUMN,
        **meta,
    }
    return Servable(family, python_model, artifacts, metadata, _requirements(kind))


def _cnn(family: str, fitted, recipe: Recipe, folder: Path, cytokine):
    if not hasattr(fitted, "get_weights"):
        raise ValueError(f"{family} is served from its Keras model; got {type(fitted).__name__}")
    keras_file = str(serving.save_keras(fitted, folder))
    return serving.ThumbnailModel(recipe), {serving.KERAS_ARTIFACT: keras_file}, {}


def _multitask(family: str, fitted, recipe: Recipe, folder: Path, cytokine):
    _expect(family, fitted, Multitask)
    if cytokine not in fitted.cytokines:
        raise ValueError(f"multitask_cnn serves one cytokine of {list(fitted.cytokines)}; got {cytokine!r}")
    column = fitted.cytokines.index(cytokine)
    keras_file = str(serving.save_keras(fitted.model, folder))
    meta = {"cytokines": list(fitted.cytokines), "cytokine": cytokine, "column": column}
    return serving.ThumbnailModel(recipe, "sigmoid", column), {serving.KERAS_ARTIFACT: keras_file}, meta


def _vit(family: str, fitted, recipe: Recipe, folder: Path, cytokine):
    _expect(family, fitted, Vit)
    backbone = _backbone_meta(fitted.backbone, recipe)
    path = folder / "vit_head.keras"
    fitted.head.save(path)
    return VitModel(recipe, backbone), {VIT_HEAD: str(path)}, {"backbone": backbone}


def _profile(family: str, fitted, recipe: Recipe, folder: Path, cytokine):
    _expect(family, fitted, Profile)
    _needs_nucleus(family, recipe)
    norm = fitted.normalization
    lacking = [c for c in fitted.model.columns if c != profile.COUNT and c not in norm.columns]
    if lacking:
        raise ValueError(
            f"the profile normalization lacks {len(lacking)} of the model's columns: {lacking[:3]}"
        )
    body = {"model": fitted.model.as_dict(), "normalization": norm.as_dict()}
    meta = {"normalization": norm.method, "n_features": len(fitted.model.columns)}
    return ProfileServed(recipe), {STATE: _json(folder / "profile.json", body)}, meta


def _cell_count(family: str, fitted, recipe: Recipe, folder: Path, cytokine):
    _expect(family, fitted, CellCount)
    _needs_nucleus(family, recipe)
    if fitted.counter not in COUNTERS or len(fitted.linear.coef) != 1:
        raise ValueError(
            f"cell_count serves one count column by {' or '.join(COUNTERS)}; got {fitted.counter!r}"
        )
    body = {"linear": fitted.linear.as_dict(), "counter": fitted.counter}
    artifacts = {STATE: _json(folder / "cell_count.json", body)}
    return CellCountServed(recipe, fitted.counter), artifacts, {"counter": fitted.counter}


_BUILDERS = {
    "cnn": _cnn,
    "multitask": _multitask,
    "vit": _vit,
    "profile": _profile,
    "cell_count": _cell_count,
}


def _expect(family: str, fitted, kind: type) -> None:
    if not isinstance(fitted, kind):
        raise ValueError(f"{family} is served from a servable.{kind.__name__}; got {type(fitted).__name__}")


def _needs_nucleus(family: str, recipe: Recipe) -> None:
    if "nucleus" not in recipe.plate_channels:
        raise ValueError(
            f"{family} counts nuclei on a 'nucleus' channel; the plate has {recipe.plate_channels}"
        )


def _json(path: Path, body: dict) -> str:
    path.write_text(json.dumps(body) + "\n", encoding="utf-8")
    return str(path)


def _requirements(kind: str) -> tuple[str, ...]:
    reqs = []
    for dist in ("numpy", "pandas", *_REQUIREMENTS[kind]):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(reqs)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _backbone_meta(backbone: dict, recipe: Recipe) -> dict:
    """The backbone reference a served ViT carries: its weights file (and SHA-256) or its random seed."""
    out = {k: backbone[k] for k in ("weights", "seed", "layers", "image_size")}
    if len(recipe.channels) != 3:
        raise ValueError(f"a ViT reads 3 channels (RGB); the recipe has {list(recipe.channels)}")
    if int(out["image_size"]) != recipe.image_size:
        raise ValueError(f"the ViT backbone reads {out['image_size']} px; the recipe {recipe.image_size} px")
    if out["weights"] != "random":
        path = Path(out["weights"])
        if not path.is_file():
            raise ValueError(f"the ViT backbone's weights file {path} does not exist")
        out["weights"], out["sha256"] = str(path.resolve()), sha256(path)
    return out


class VitModel(ServedModel):
    """A served ViT: the frozen ViT-B/32 (rebuilt at load from its weights file or seed) and its head."""

    def __init__(self, r: Recipe, backbone: dict):
        self.recipe, self.backbone = r, dict(backbone)
        self.head = self.vit = None

    def load_context(self, context) -> None:
        machine.import_tensorflow()  # as in serving.ThumbnailModel
        import keras

        from cytoops import models

        self.head = keras.saving.load_model(context.artifacts[VIT_HEAD], compile=False)
        b = self.backbone
        weights = (getattr(context, "model_config", None) or {}).get("vit_weights") or b["weights"]
        if weights == "random":
            keras.utils.set_random_seed(int(b["seed"]))  # as the features stage seeded it
            weights = None
        elif not Path(weights).is_file() or sha256(Path(weights)) != b["sha256"]:
            raise ValueError(
                f"this ViT model needs its backbone weights file {Path(b['weights']).name} (SHA-256 "
                f"{b['sha256'][:12]}...) at {weights}: copy it there, or load with "
                "model_config={'vit_weights': '<path of that file>'}"
            )
        params = models.ModelParams(vit_weights=weights, vit_layers=int(b["layers"]))
        self.vit, _ = models.build_backbone(params, image_size=int(b["image_size"]))

    def scaled_probabilities(self, x: np.ndarray) -> np.ndarray:
        from cytoops import features

        if not len(x):
            return np.zeros(0)
        picks = [self.recipe.plate_channels.index(c) for c in self.recipe.channels]
        rgb = features.to_vit_input(x[:, picks])
        feats = np.concatenate(
            [np.asarray(self.vit(rgb[i : i + 64], training=False)) for i in range(0, len(rgb), 64)]
        )
        return np.asarray(self.head(feats, training=False), dtype=np.float64)[:, 0]


def _state(context) -> dict:
    return json.loads(Path(context.artifacts[STATE]).read_text(encoding="utf-8"))


class ProfileServed(ServedModel):
    """The served profile: segmentation and cp-measure per thumbnail, the training plate's normalization
    (or, for a whole plate with negative controls, that plate's), the kept columns, the L1 model."""

    def __init__(self, r: Recipe):
        self.recipe = r
        self.model = self.normalization = None

    def load_context(self, context) -> None:
        state = _state(context)
        self.model = profile.ProfileModel.from_dict(state["model"])
        self.normalization = profile.Normalization.from_dict(state["normalization"])

    def scaled_probabilities(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        raw = profile.measure(x, self.recipe.plate_channels)
        return self.model.predict_proba(profile.features_of(raw, self.normalization))

    def plate_probabilities(self, images: np.ndarray, roles=None, memo=None) -> tuple[np.ndarray, str]:
        x = self.plate_scaled(images)
        if not len(x):
            return np.zeros(0), ""
        raw = profile.measure(x, self.recipe.plate_channels, memo=memo, workers=0)
        norm, note = plate_normalization(raw, roles, self.normalization)
        return self.model.predict_proba(profile.features_of(raw, norm)), note


def plate_normalization(
    raw: pd.DataFrame, roles, training: profile.Normalization
) -> tuple[profile.Normalization, str]:
    """A new plate's normalization and a line saying which: to its own negative controls when it has
    `profile.MIN_CONTROLS` and the model was trained on features normalized to controls; else the training
    plate's statistics."""
    n = int((np.asarray(roles).astype(str) == "negative_control").sum()) if roles is not None else 0
    if training.method != "mad_robustize":
        return (
            training,
            "profile normalized with the training plate's statistics (it had no negative controls)",
        )
    if n < profile.MIN_CONTROLS:
        return training, (
            f"profile normalized with the training plate's statistics (this plate has {n} negative-control "
            f"wells in layout.csv; {profile.MIN_CONTROLS} needed)"
        )
    values = raw.reindex(columns=list(training.columns))
    fill = values.median().fillna(pd.Series(training.fill, index=list(training.columns)))
    own = profile.fit_normalization(values.fillna(fill), roles, fill)
    return own, f"profile normalized to this plate's {n} negative-control wells"


class CellCountServed(ServedModel):
    """The served cell-count baseline: nuclei per thumbnail, counted as the baseline counted them, and its
    fitted logistic regression."""

    def __init__(self, r: Recipe, counter: str):
        self.recipe, self.counter = r, counter
        self.linear = None

    def load_context(self, context) -> None:
        self.linear = Linear.from_dict(_state(context)["linear"])

    def scaled_probabilities(self, x: np.ndarray) -> np.ndarray:
        from cytoops.verdict import baselines

        if not len(x):
            return np.zeros(0)
        counts = baselines.count_cells(x, self.recipe.plate_channels, self.counter)
        return self.linear.probability(counts[:, None])
