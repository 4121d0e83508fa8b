"""params.yaml, loaded once into frozen dataclasses: one section per stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STRATEGIES = ("none", "hflip", "vflip", "hvflip", "flips", "d4")
BINARIZE_METHODS = ("threshold", "fold_change", "robust_z")
ARCHITECTURES = ("wide_cnn", "deep_cnn", "vit_linear", "vit_240k", "vit_500k")  # = cytoops.models.REGISTRY (tested)


@dataclass(frozen=True)
class WrangleParams:
    image_size: int = 64
    method: str = "threshold"
    threshold: float = 0.0
    min_wells: int = 15
    seed: int = 42

    def __post_init__(self):
        if self.method not in BINARIZE_METHODS:
            raise ValueError(f"wrangle.method is {self.method!r}: choose one of {', '.join(BINARIZE_METHODS)}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"wrangle.image_size is {self.image_size}: use a multiple of 32 (ViT-B/32 patches)")
        if self.min_wells < 2:
            raise ValueError(f"wrangle.min_wells is {self.min_wells}: it must be at least 2")


@dataclass(frozen=True)
class AugmentParams:
    strategies: tuple[str, ...] = ("none", "hflip", "vflip", "hvflip", "flips")

    def __post_init__(self):
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"augment.strategies has {bad or 'nothing'}: choose from {', '.join(STRATEGIES)}")


@dataclass(frozen=True)
class FeaturesParams:
    vit_weights: str | None = None
    batch_size: int = 128
    seed: int = 42


@dataclass(frozen=True)
class TrainParams:
    architectures: tuple[str, ...] = ("wide_cnn", "deep_cnn", "vit_linear", "vit_240k", "vit_500k")
    cnn_channels: tuple[str, ...] = ("actin", "mito", "nucleus")
    folds: int = 2
    repeats: int = 1  # repeated cross-validation with fresh fold seeds (seed + repeat)
    seed: int = 42
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 5
    val_fraction: float = 0.2
    precision: str = "float32"  # or mixed_bfloat16: about 2x faster deep CNN on CPUs with AVX512-BF16

    def __post_init__(self):
        if self.precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
            raise ValueError(f"train.precision is {self.precision!r}: use float32, mixed_bfloat16 or mixed_float16")
        if self.repeats < 1:
            raise ValueError(f"train.repeats is {self.repeats}: use at least 1")
        bad = [a for a in self.architectures if a not in ARCHITECTURES]
        if bad or not self.architectures:
            raise ValueError(f"train.architectures has {bad or 'nothing'}: choose from {', '.join(ARCHITECTURES)}")
        if self.folds < 2:
            raise ValueError(f"train.folds is {self.folds}: cross-validation needs at least 2")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"train.val_fraction is {self.val_fraction}: use a value in (0, 0.5)")
        if self.epochs < 1:
            raise ValueError(f"train.epochs is {self.epochs}: train for at least 1 epoch")


@dataclass(frozen=True)
class EvaluateParams:
    f1_cutoff: float = 0.7


@dataclass(frozen=True)
class Params:
    wrangle: WrangleParams = field(default_factory=WrangleParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def flat(self) -> dict[str, object]:
        """`section.key -> value`, for logging."""
        return {
            f"{s.name}.{k}": v
            for s in dataclasses.fields(self)
            for k, v in dataclasses.asdict(getattr(self, s.name)).items()
        }


def _section(cls, raw: dict, name: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"params: unknown key(s) {', '.join(name + '.' + k for k in unknown)}; known: {', '.join(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values)


def from_dict(raw: dict) -> Params:
    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"params: unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    classes = {f.name: f.default_factory for f in dataclasses.fields(Params)}
    return Params(**{name: _section(classes[name], raw.get(name) or {}, name) for name in classes})


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`section.key=value` strings (values parsed as YAML) applied to a raw params dict."""
    raw = {k: dict(v or {}) for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} is not section.key=value (e.g. train.epochs=5)")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return raw


def load(path: Path | None = None, overrides: list[str] | None = None) -> Params:
    raw: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"params file {path} does not exist")
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of sections (wrangle, augment, features, train, evaluate)")
    return from_dict(apply_overrides(raw, overrides or []))
