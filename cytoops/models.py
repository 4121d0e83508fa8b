"""The study's five architectures and ours (multitask CNN; cnn_all, the Wider CNN on every labelled well),
built by functions and registered by name.

CNNs take the raw thumbnail (channels chosen by `train.cnn_channels`; the study used one).
ViT models sit on a frozen vit-keras ViT-B/32 at image size 64 and always see three channels:
the backbone is a feature extractor, so only the head is trained. `build_<name>(input_shape, params)`
returns the full model (backbone + head for ViTs); `build_head(name, n_features, params)` returns the
trainable head alone, which the trainer fits on cached backbone features.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cytoops.params import ARCHITECTURES, CNN_KINDS

VIT_FEATURES = 768  # ViT-B hidden size: the CLS token the heads read


@dataclass(frozen=True)
class ModelParams:
    """What a builder needs beyond the input shape."""

    learning_rate: float = 1e-3
    vit_weights: str | None = None  # vit-keras npz of ViT-B/32 (e.g. ViT-B_32_imagenet21k+imagenet2012.npz)
    vit_layers: int = 12  # transformer blocks; 12 is ViT-B/32 (smaller only in tests)
    dtype_policy: str = "float32"  # or "mixed_bfloat16"; the output layer always computes in float32
    n_outputs: int = 1  # multitask_cnn: one logit per kept cytokine


@dataclass(frozen=True)
class ModelSpec:
    name: str
    study_name: str
    build: Callable[[tuple[int, ...], ModelParams], keras.Model]
    head_units: tuple[int, ...] = ()  # ViT heads: hidden Dense widths, each followed by LeakyReLU(0.2)

    @property
    def kind(self) -> str:
        """cnn, vit, multitask or cnn_all: from the one architecture table, params.ARCHITECTURES."""
        return ARCHITECTURES[self.name]


def _compile_logits(model: keras.Model, params: ModelParams) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def build_wide_cnn(input_shape: tuple[int, ...], params: ModelParams) -> keras.Model:
    """The study's "Wider CNN" (its best model): one conv layer, then a dense layer on the whole map."""
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, (3, 3), activation="relu", dtype=params.dtype_policy),
            layers.Flatten(dtype=params.dtype_policy),
            layers.Dense(32, activation="relu", dtype=params.dtype_policy),
            layers.Dense(2, dtype="float32"),
        ],
        name="wide_cnn",
    )
    return _compile_logits(model, params)


def build_deep_cnn(input_shape: tuple[int, ...], params: ModelParams) -> keras.Model:
    """The study's "Deeper CNN": four conv layers, three max-pools, then the same small dense top."""
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            *[
                layer
                for filters in (32, 64, 128)
                for layer in (
                    layers.Conv2D(filters, (3, 3), activation="relu", dtype=params.dtype_policy),
                    layers.MaxPooling2D((2, 2), dtype=params.dtype_policy),
                )
            ],
            layers.Conv2D(256, (3, 3), activation="relu", dtype=params.dtype_policy),
            layers.Flatten(dtype=params.dtype_policy),
            layers.Dense(32, activation="relu", dtype=params.dtype_policy),
            layers.Dense(2, dtype="float32"),
        ],
        name="deep_cnn",
    )
    return _compile_logits(model, params)


def build_multitask_cnn(input_shape: tuple[int, ...], params: ModelParams) -> keras.Model:
    """Ours, not the study's: one CNN for every cytokine of a plate (`params.n_outputs` logits).

    Small and translation-invariant (global average pooling), so that it learns per-well morphology
    (counts, sizes, intensities, textures) from all the plate's labels at once rather than one cytokine's
    ~28 wells; trained by `multitask.fit` with a loss masked where a well has no label.
    """
    stack: list = [keras.Input(shape=input_shape)]
    for filters in (16, 32, 64):
        stack += [
            layers.Conv2D(filters, (3, 3), padding="same", activation="relu", dtype=params.dtype_policy),
            layers.MaxPooling2D((2, 2), dtype=params.dtype_policy),
        ]
    stack += [
        layers.Conv2D(64, (3, 3), padding="same", activation="relu", dtype=params.dtype_policy),
        layers.GlobalAveragePooling2D(dtype=params.dtype_policy),
        layers.Dense(64, activation="relu", dtype=params.dtype_policy),
        layers.Dense(params.n_outputs, dtype="float32"),
    ]
    return keras.Sequential(stack, name="multitask_cnn")


def build_head(name: str, n_features: int, params: ModelParams) -> keras.Model:
    """The trainable part of a ViT model: Dense stack on the backbone's CLS features, sigmoid output."""
    spec = REGISTRY[name]
    if spec.kind != "vit":
        raise ValueError(f"{name!r} is a {spec.kind}, not a ViT model: it has no separate head")
    stack: list[layers.Layer] = [keras.Input(shape=(n_features,))]
    for units in spec.head_units:
        stack += [layers.Dense(units), layers.LeakyReLU(negative_slope=0.2)]
    stack.append(layers.Dense(1, activation="sigmoid"))
    model = keras.Sequential(stack, name=f"{name}_head")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_backbone(params: ModelParams, image_size: int = 64) -> tuple[keras.Model, bool]:
    """The frozen ViT-B/32 (vit-keras), with pretrained weights from `params.vit_weights` when given.

    Returns (backbone, pretrained). Nothing is ever downloaded: without a weights file the backbone
    is randomly initialised (seeded by the caller via keras.utils.set_random_seed) and a warning says so.
    """
    from vit_keras import utils as vit_utils
    from vit_keras import vit

    backbone = vit.build_model(
        image_size=image_size,
        patch_size=32,
        num_layers=params.vit_layers,
        hidden_size=VIT_FEATURES,
        num_heads=12,
        name="vit-b32",
        mlp_dim=3072,
        classes=2,
        dropout=0.1,
        include_top=False,
    )
    pretrained = params.vit_weights is not None
    if pretrained:
        path = Path(params.vit_weights)
        if not path.is_file():
            raise ValueError(
                f"ViT weights file {path} does not exist: set features.vit_weights to the vit-keras npz "
                "of ViT-B/32 (ViT-B_32_imagenet21k+imagenet2012.npz), or to null for a random backbone"
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Resizing position embeddings")
            vit_utils.load_weights_numpy(
                model=backbone,
                params_path=str(path),
                pretrained_top=False,
                num_x_patches=image_size // 32,
                num_y_patches=image_size // 32,
            )
    backbone.trainable = False
    return backbone, pretrained


def _build_vit(name: str) -> Callable[[tuple[int, ...], ModelParams], keras.Model]:
    def build(input_shape: tuple[int, ...], params: ModelParams) -> keras.Model:
        if input_shape[-1] != 3:
            raise ValueError(
                f"{name} takes 3 channels (the ViT backbone is RGB); got input shape {input_shape}"
            )
        backbone, _ = build_backbone(params, image_size=input_shape[0])
        head = build_head(name, VIT_FEATURES, params)
        inputs = keras.Input(shape=input_shape)
        model = keras.Model(inputs, head(backbone(inputs)), name=name)
        model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss="binary_crossentropy")
        return model

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{name}: frozen ViT-B/32 + trainable head {REGISTRY_HEADS[name]}."
    return build


REGISTRY_HEADS: dict[str, tuple[int, ...]] = {
    "vit_linear": (),
    "vit_240k": (256, 128, 64, 32),
    "vit_500k": (512, 256, 128, 64, 32),
}

REGISTRY: dict[str, ModelSpec] = {
    "wide_cnn": ModelSpec("wide_cnn", "Wider CNN", build_wide_cnn),
    "deep_cnn": ModelSpec("deep_cnn", "Deeper CNN", build_deep_cnn),
    "vit_linear": ModelSpec(
        "vit_linear", "Simple ViT", _build_vit("vit_linear"), REGISTRY_HEADS["vit_linear"]
    ),
    "vit_240k": ModelSpec("vit_240k", "Fine-Tuned ViT", _build_vit("vit_240k"), REGISTRY_HEADS["vit_240k"]),
    "vit_500k": ModelSpec("vit_500k", "ViT 500k", _build_vit("vit_500k"), REGISTRY_HEADS["vit_500k"]),
    "multitask_cnn": ModelSpec("multitask_cnn", "(ours) multitask CNN", build_multitask_cnn),
    "cnn_all": ModelSpec("cnn_all", "(ours) Wider CNN, all wells", build_wide_cnn),  # the network, reused
}


def get(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown architecture {name!r}: choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_trainable(name: str, channels: int = 1, image_size: int = 64) -> int:
    """Trainable parameters of an architecture, without building the 87M-parameter backbone for ViTs."""
    spec = get(name)
    if spec.kind in (*CNN_KINDS, "multitask"):
        return trainable_params(spec.build((image_size, image_size, channels), ModelParams()))
    return trainable_params(build_head(name, VIT_FEATURES, ModelParams()))
