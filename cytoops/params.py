"""params.yaml, loaded once into frozen dataclasses: one section per stage, and the table of architectures.

Each section checks its own values in `__post_init__` (a one-line error with the fix); `_coerce` and
`_section` (about 45 lines) turn YAML values into the declared types and reject unknown keys. pydantic (which
MLflow installs) could replace those 45 lines, not the checks, which are domain rules; its errors would need a
formatter to stay one line each, and the sections are `dataclasses.replace`d across the stages: kept as is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STRATEGIES = ("none", "hflip", "vflip", "hvflip", "flips", "d4")
BINARIZE_METHODS = ("threshold", "fold_change", "robust_z")
# The one table of what `train.architectures` may name: name -> kind. Keras builders live in models.REGISTRY
# (every kind but "profile"); the first five are the study's. Kinds: cnn and vit (the study's, one model per
# cytokine on its class-balanced wells), profile (morphological profile + regularized logistic regression,
# profile.py), multitask (one CNN for all cytokines of a plate, multitask.py) and cnn_all (a study CNN's
# network per cytokine on every labelled well, class-weighted, under the richest augmentation).
ARCHITECTURES: dict[str, str] = {
    "wide_cnn": "cnn",
    "deep_cnn": "cnn",
    "vit_linear": "vit",
    "vit_240k": "vit",
    "vit_500k": "vit",
    "profile": "profile",
    "multitask_cnn": "multitask",
    "cnn_all": "cnn_all",
}
STUDY_ARCHITECTURES = tuple(a for a, kind in ARCHITECTURES.items() if kind in ("cnn", "vit"))
CNN_KINDS = ("cnn", "cnn_all")  # one Keras CNN per cytokine on the thumbnails, trained by fitter.Fitter
OPT_IN = ("cnn_all",)  # not in the default grid: it costs more than it adds on the demo (docs/statistics.md)


def architecture_kind(name: str) -> str:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


BACKENDS = ("local", "ray")  # = cytoops.backends.BACKENDS (tested)


@dataclass(frozen=True)
class WrangleParams:
    image_size: int = 64
    method: str = "threshold"
    threshold: float = 0.0
    min_wells: int = 15
    seed: int = 42

    def __post_init__(self):
        if self.method not in BINARIZE_METHODS:
            raise ValueError(
                f"wrangle.method is {self.method!r}: choose one of {', '.join(BINARIZE_METHODS)}"
            )
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"wrangle.image_size is {self.image_size}: use a multiple of 32 (ViT-B/32 patches)"
            )
        if self.min_wells < 2:
            raise ValueError(f"wrangle.min_wells is {self.min_wells}: it must be at least 2")
        if not math.isfinite(self.threshold):
            raise ValueError(f"wrangle.threshold is {self.threshold}: use a finite number")


@dataclass(frozen=True)
class AugmentParams:
    strategies: tuple[str, ...] = ("none", "hflip", "vflip", "hvflip", "flips")

    def __post_init__(self):
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(
                f"augment.strategies has {bad or 'nothing'}: choose from {', '.join(STRATEGIES)}"
            )


@dataclass(frozen=True)
class FeaturesParams:
    vit_weights: str | None = None
    batch_size: int = 128
    seed: int = 42

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"features.batch_size is {self.batch_size}: use at least 1")


@dataclass(frozen=True)
class TrainParams:
    architectures: tuple[str, ...] = tuple(a for a in ARCHITECTURES if a not in OPT_IN)
    cnn_channels: tuple[str, ...] = ("actin", "mito", "nucleus")
    folds: int = 2
    repeats: int = 1  # repeated cross-validation with fresh fold seeds (seed + repeat)
    seed: int = 42
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 5
    val_fraction: float = 0.2
    workers: int = 0  # processes training units in parallel; 0 = one per CPU core (1 when a GPU is visible)
    precision: str = "float32"  # or mixed_bfloat16: about 2x faster deep CNN on CPUs with AVX512-BF16
    backend: str = "local"  # local: this machine (workers processes); ray: a Ray cluster (docs/ray.md)
    ray_address: str | None = None  # cluster to join; None: $RAY_ADDRESS, else a local runtime per stage
    ray_gpus_per_task: float = 0.25  # share of a GPU each Ray task asks for, where the cluster has GPUs
    ray_retries: int = 3  # times Ray reruns a task whose worker died (killed, out of memory, node lost)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"train.backend is {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not 0 <= self.ray_gpus_per_task <= 1:
            raise ValueError(
                f"train.ray_gpus_per_task is {self.ray_gpus_per_task}: use a share of one GPU in [0, 1]"
            )
        if self.ray_retries < 0:
            raise ValueError(f"train.ray_retries is {self.ray_retries}: use 0 or more")
        if self.precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
            raise ValueError(
                f"train.precision is {self.precision!r}: use float32, mixed_bfloat16 or mixed_float16"
            )
        if self.workers < 0:
            raise ValueError(f"train.workers is {self.workers}: use 0 (one per core) or a positive number")
        if self.repeats < 1:
            raise ValueError(f"train.repeats is {self.repeats}: use at least 1")
        bad = [a for a in self.architectures if a not in ARCHITECTURES]
        if bad or not self.architectures:
            raise ValueError(
                f"train.architectures has {bad or 'nothing'}: choose from {', '.join(ARCHITECTURES)}"
            )
        if self.folds < 2:
            raise ValueError(f"train.folds is {self.folds}: cross-validation needs at least 2")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"train.val_fraction is {self.val_fraction}: use a value in (0, 0.5)")
        if self.epochs < 1:
            raise ValueError(f"train.epochs is {self.epochs}: train for at least 1 epoch")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size is {self.batch_size}: use at least 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"train.learning_rate is {self.learning_rate}: use a finite positive number (e.g. 0.001)"
            )
        if self.patience < 0:
            raise ValueError(f"train.patience is {self.patience}: use 0 or more epochs")


@dataclass(frozen=True)
class EvaluateParams:
    f1_cutoff: float = 0.7

    def __post_init__(self):
        if not math.isfinite(self.f1_cutoff):  # above 1 is allowed: no model is then called predictive
            raise ValueError(f"evaluate.f1_cutoff is {self.f1_cutoff}: use a finite number (e.g. 0.7)")


LOG_MODELS = ("champions", "all", "none")
PROMOTE = ("best", "latest")


@dataclass(frozen=True)
class TrackingParams:
    experiment: str = (
        "cytoops"  # MLflow experiment (store: MLFLOW_TRACKING_URI, else mlflow.db in the repo root)
    )
    log_models: str = (
        "champions"  # champions: each cytokine's best CNN, registered; all: also every model; none
    )
    promote: str = (
        "best"  # best: `champion` moves only to a version with CV F1 >= the current one's; latest: always
    )

    def __post_init__(self):
        if not str(self.experiment).strip():
            raise ValueError("tracking.experiment is empty: name the MLflow experiment (e.g. cytoops)")
        if self.log_models not in LOG_MODELS:
            raise ValueError(
                f"tracking.log_models is {self.log_models!r}: choose one of {', '.join(LOG_MODELS)}"
            )
        if self.promote not in PROMOTE:
            raise ValueError(f"tracking.promote is {self.promote!r}: choose one of {', '.join(PROMOTE)}")


@dataclass(frozen=True)
class VerdictParams:
    alpha: float = 0.05  # Benjamini-Hochberg FDR level across the kept cytokines
    n_perm: int = 9999  # label permutations of the test: p floor 1 / (n_perm + 1)
    n_boot: int = 1000  # cluster-bootstrap draws (treatment groups within test folds) for the intervals
    level: float = 0.95  # interval coverage
    heatmaps: int = 6  # cytokines shown on plate maps in the report
    seed: int = 42

    def __post_init__(self):
        if not 0 < self.alpha < 1 or not 0 < self.level < 1:
            raise ValueError(f"verdict.alpha ({self.alpha}) and .level ({self.level}) must be in (0, 1)")
        if min(self.n_perm, self.n_boot) < 1:
            raise ValueError(f"verdict.n_perm ({self.n_perm}) and .n_boot ({self.n_boot}) must be >= 1")


@dataclass(frozen=True)
class Params:
    wrangle: WrangleParams = field(default_factory=WrangleParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    verdict: VerdictParams = field(default_factory=VerdictParams)

    def __post_init__(self):
        if "deep_cnn" in self.train.architectures and self.wrangle.image_size < 64:
            raise ValueError(
                f"deep_cnn needs wrangle.image_size >= 64 (its fourth convolution has nothing left at "
                f"{self.wrangle.image_size}); raise image_size or drop deep_cnn from train.architectures"
            )

    def flat(self) -> dict[str, object]:
        """`section.key -> value`, for logging."""
        return {
            f"{s.name}.{k}": v
            for s in dataclasses.fields(self)
            for k, v in dataclasses.asdict(getattr(self, s.name)).items()
        }


def _coerce(value, annotation: str, key: str):
    """A YAML value as the field's declared type; a ValueError naming the key when it is not one."""
    optional = annotation.endswith("| None")
    kind = annotation.removesuffix("| None").strip()
    if value is None:
        if optional:
            return None
        raise ValueError(f"params: {key} may not be empty (expected {kind})")
    if kind.startswith("tuple"):
        items = value if isinstance(value, list | tuple) else str(value).split(",")
        return tuple(str(v).strip() for v in items)
    try:
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)  # also YAML's "1e-4", which it reads as a string
        if kind == "str":
            if isinstance(value, list | dict):
                raise TypeError
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: .inf as an int
        raise ValueError(f"params: {key} is {value!r}, which is not a valid {kind}") from None
    return value


def _section(cls, raw: dict, name: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(
            f"params: unknown key(s) {', '.join(name + '.' + k for k in unknown)}; known: {', '.join(known)}"
        )
    values = {k: _coerce(v, str(known[k].type), f"{name}.{k}") for k, v in raw.items()}
    return cls(**values)


def from_dict(raw: dict) -> Params:
    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"params: unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    classes = {f.name: f.default_factory for f in dataclasses.fields(Params)}
    for name in classes:
        _mapping(raw.get(name), name)
    return Params(**{name: _section(classes[name], raw.get(name) or {}, name) for name in classes})


def _mapping(section: object, name: str) -> dict:
    """A params section as a dict; a ValueError naming it when it is not a mapping of keys."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(
            f"params: section {name} holds {section!r}, not keys; write '{name}:' then indented "
            f"'key: value' lines"
        )
    return dict(section)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`section.key=value` strings (values parsed as YAML) applied to a raw params dict."""
    raw = {k: _mapping(v, k) for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} is not section.key=value (e.g. train.epochs=5)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            where = " ".join(str(getattr(err, "problem", "") or "malformed YAML").split())
            raise ValueError(
                f"override {key.strip()}: {value!r} is not a YAML value ({where}); "
                f"write e.g. {key.strip()}=[a,b] or {key.strip()}=5"
            ) from None
        raw.setdefault(section, {})[name] = parsed
    return raw


def load(path: Path | None = None, overrides: list[str] | None = None) -> Params:
    raw: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"params file {path} does not exist")
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            mark = getattr(err, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            what = " ".join(str(getattr(err, "problem", "") or err).split())
            raise ValueError(
                f"params file {path} cannot be read{line} ({what}): write valid YAML, one "
                f"'section:' with indented 'key: value' lines"
            ) from None
        if not isinstance(raw, dict):
            raise ValueError(
                f"{path}: expected a mapping of sections (wrangle, augment, features, train, evaluate)"
            )
    return from_dict(apply_overrides(raw, overrides or []))
