"""params.yaml, loaded once into frozen dataclasses: one section per stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STRATEGIES = ("none", "hflip", "vflip", "hvflip", "flips", "d4")
BINARIZE_METHODS = ("threshold", "fold_change", "robust_z")
BACKENDS = ("local", "ray")  # = cytoops.backends.BACKENDS (tested)
ARCHITECTURES = (
    "wide_cnn",
    "deep_cnn",
    "vit_linear",
    "vit_240k",
    "vit_500k",
)  # = cytoops.models.REGISTRY (tested)


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
    workers: int = 0  # processes training units in parallel; 0 = one per CPU core (1 when a GPU is visible)
    precision: str = "float32"  # or mixed_bfloat16: about 2x faster deep CNN on CPUs with AVX512-BF16
    backend: str = "local"  # local: this machine (workers processes); ray: a Ray cluster (docs/ray.md)
    ray_address: str | None = None  # cluster to join; None: $RAY_ADDRESS, else a local runtime per stage
    ray_gpus_per_task: float = 0.25  # share of a GPU each Ray task asks for, where the cluster has GPUs
    ray_retries: int = 3  # times Ray reruns a task whose worker died (killed, out of memory, node lost)
    batched: bool = False  # train the units of one architecture and input shape at once (batched.py)
    batched_tasks: int = 1  # under batched: tasks (of one architecture) whose units train together

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"train.backend is {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not 0 <= self.ray_gpus_per_task <= 1:
            raise ValueError(
                f"train.ray_gpus_per_task is {self.ray_gpus_per_task}: use a share of one GPU in [0, 1]"
            )
        if self.batched and self.precision != "float32":
            raise ValueError(
                f"train.batched trains in float32, train.precision is {self.precision!r}: "
                "set train.precision=float32 or train.batched=false"
            )
        if self.batched_tasks < 1:
            raise ValueError(f"train.batched_tasks is {self.batched_tasks}: use 1 or more")
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


@dataclass(frozen=True)
class EvaluateParams:
    f1_cutoff: float = 0.7


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


VERDICT_TESTS = ("conditional", "refit")
REFIT_SCOPES = ("none", "top", "called", "candidates", "all")
BEAT_RULES = ("both", "f1", "roc_auc", "either")
STATISTICS = ("roc_auc", "f1")  # the verdict tests' statistic (and its best-model pick)


@dataclass(frozen=True)
class VerdictParams:
    alpha: float = 0.05  # Benjamini-Hochberg FDR level across the kept cytokines
    test: str = "conditional"  # the p behind the call: conditional (max-T over the grid) or refit
    n_perm: int = 9999  # conditional test-label permutations (no refits): p floor 1 / (n_perm + 1)
    n_perm_cnn: int = 19  # refit permutations when the best model is a CNN (each one a CV fit)
    n_perm_vit: int = 49  # refit permutations when it is a ViT head (cheaper fits)
    refit_scope: str = "top"  # cytokines refitted: none, top (smallest p), called, candidates, all
    refit_max: int = 3  # at most this many cytokines get the refit test (0: no cap)
    refit_augmentation: str = "cheapest"  # cheapest (fewest training views) or best (the best model's own)
    refit_stop_after: int = 3  # stop a cytokine's refits once this many null F1s reach the observed F1
    statistic: str = "f1"  # the tests' statistic and the best-model pick: f1 (the study's) or roc_auc
    beat_on: str = "both"  # the best model must beat every baseline on: both (F1, AUC), f1, roc_auc, either
    n_boot: int = 1000  # cluster-bootstrap draws (treatment groups within test folds) for the intervals
    level: float = 0.95  # interval coverage
    heatmaps: int = 6  # cytokines shown on plate maps in the report
    seed: int = 42

    def __post_init__(self):
        if self.test not in VERDICT_TESTS:
            raise ValueError(f"verdict.test is {self.test!r}: choose one of {', '.join(VERDICT_TESTS)}")
        if self.refit_scope not in REFIT_SCOPES:
            raise ValueError(
                f"verdict.refit_scope is {self.refit_scope!r}: choose one of {', '.join(REFIT_SCOPES)}"
            )
        if self.refit_augmentation not in ("cheapest", "best"):
            raise ValueError(f"verdict.refit_augmentation is {self.refit_augmentation!r}: cheapest or best")
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"verdict.statistic is {self.statistic!r}: choose one of {', '.join(STATISTICS)}"
            )
        if self.beat_on not in BEAT_RULES:
            raise ValueError(f"verdict.beat_on is {self.beat_on!r}: choose one of {', '.join(BEAT_RULES)}")
        if not 0 < self.alpha < 1 or not 0 < self.level < 1:
            raise ValueError(f"verdict.alpha ({self.alpha}) and .level ({self.level}) must be in (0, 1)")
        refits = (self.n_perm_cnn, self.n_perm_vit, self.refit_stop_after, self.refit_max)
        if min(self.n_perm, self.n_boot) < 1 or min(refits) < 0:
            raise ValueError("verdict: n_perm, n_boot >= 1; n_perm_cnn, n_perm_vit, refit_* >= 0")


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
    except (TypeError, ValueError):
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
            raise ValueError(
                f"{path}: expected a mapping of sections (wrangle, augment, features, train, evaluate)"
            )
    return from_dict(apply_overrides(raw, overrides or []))
