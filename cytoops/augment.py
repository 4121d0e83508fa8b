"""augment: the study's flip strategies (plus none, and d4 as an extra) as named views of every well.

The stage writes a view bank: every transform any configured strategy needs, applied to every well, each
copy carrying its source well. Training picks, for its training wells only, the views of its strategy;
test and validation wells are only ever seen as they are (the identity view). `training_views` and
`identity_view` are that rule, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from cytoops.params import AugmentParams
from cytoops.params import load as load_params

log = logging.getLogger(__name__)

# Transforms act on the last two axes (Y, X) of (..., Y, X) arrays.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x[..., :, ::-1],
    "vflip": lambda x: x[..., ::-1, :],
    "hvflip": lambda x: x[..., ::-1, ::-1],  # both axes (= rotation by 180 degrees)
    "rot90": lambda x: np.rot90(x, 1, axes=(-2, -1)),
    "rot270": lambda x: np.rot90(x, 3, axes=(-2, -1)),
    "transpose": lambda x: np.swapaxes(x, -2, -1),
    "antitranspose": lambda x: np.rot90(np.swapaxes(x, -2, -1), 2, axes=(-2, -1)),
}

STRATEGY_VIEWS: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "hflip": ("identity", "hflip"),
    "vflip": ("identity", "vflip"),
    "hvflip": ("identity", "hvflip"),
    "flips": ("identity", "hflip", "vflip", "hvflip"),
    "d4": tuple(TRANSFORMS),
}


@dataclass(frozen=True)
class ViewBank:
    views: tuple[str, ...]  # transform names, views[0] == "identity"
    images: np.ndarray  # (n_views, n_wells, C, S, S); images[v, i] is well i under transform views[v]

    def index(self, name: str) -> int:
        return self.views.index(name)


def views_for(strategies: tuple[str, ...]) -> tuple[str, ...]:
    """The transforms the strategies need, identity first, in a fixed order."""
    needed = {v for s in strategies for v in STRATEGY_VIEWS[s]} | {"identity"}
    return tuple(t for t in TRANSFORMS if t in needed)


def make_bank(images: np.ndarray, strategies: tuple[str, ...], dtype=np.float16) -> ViewBank:
    names = views_for(strategies)
    bank = np.stack([np.ascontiguousarray(TRANSFORMS[t](images)) for t in names]).astype(dtype)
    return ViewBank(views=names, images=bank)


def training_views(bank_images: np.ndarray, views: tuple[str, ...], strategy: str, wells: np.ndarray):
    """Images for training on `wells` under `strategy`: (stacked images, source well of each copy).

    `bank_images` is (n_views, n_wells, ...): images or any per-view features (e.g. cached ViT features).
    """
    picks = [views.index(v) for v in STRATEGY_VIEWS[strategy]]
    x = np.concatenate([bank_images[v, wells] for v in picks])
    source = np.tile(np.asarray(wells), len(picks))
    return x, source


def labelled_views(
    bank_images: np.ndarray, views: tuple[str, ...], strategy: str, wells: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`training_views` of `wells` and the label of each copy (`labels[i]` is well `wells[i]`'s)."""
    x, _ = training_views(bank_images, views, strategy, wells)
    return x, np.concatenate([np.asarray(labels)] * len(STRATEGY_VIEWS[strategy]))


def identity_view(bank_images: np.ndarray, views: tuple[str, ...], wells: np.ndarray) -> np.ndarray:
    """Validation and test wells are seen as they are, never augmented."""
    return bank_images[views.index("identity"), wells]


# ---- stage I/O -------------------------------------------------------------------------------------------


def save(bank: ViewBank, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=bank.images, views=np.array(bank.views))


def load(path: Path) -> ViewBank:
    with np.load(path) as f:
        return ViewBank(views=tuple(str(v) for v in f["views"]), images=f["images"])


def command(
    images: Path = typer.Option(..., "--images", help="images.npy written by `cytoops wrangle`."),
    out: Path = typer.Option(..., "--out", help="The view bank to write (.npz)."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a param: --set augment.strategies=[none,d4]"
    ),
) -> None:
    """Write every view the augmentation strategies need (each copy keeps its source well)."""
    p: AugmentParams = load_params(params_file, overrides).augment
    bank = make_bank(np.load(images), p.strategies)
    save(bank, out)
    log.info(
        f"augment: {len(bank.views)} views ({', '.join(bank.views)}) of {bank.images.shape[1]} wells -> {out}"
    )
