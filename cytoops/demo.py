"""A simulated demo plate with known truth, written in the raw plate format (docs/plate-format.md).

The study's plate is not public, so cytoops ships this stand-in: 384 wells of 64x64 thumbnails
(actin, mito, nucleus) that look like fluorescent cells at low resolution, a scattered layout of
controls and compounds, 50 cytokine readouts in the study's normalized form, earlier "Part 1"
embeddings, and `truth.json`, which says what drives each cytokine:

- morphology: responder iff one visible per-well factor (cell count, nuclear size, actin intensity,
  mitochondrial texture) passes a threshold, with a little label noise. Images should predict these.
- pathway: responder iff a hidden pathway that some compounds hit is active. It has no phenotype.
- position: responder on edge wells (evaporation concentrates the supernatant). A plate artefact.
- noise: random responders. Nothing should predict these.
- rare: a handful of responders, below the study's 15-well cut-off.

truth.json also holds the factor definitions, each compound's effects (Emax per factor and pathway,
EC50 in µM) and each well's latent values ("wells"), so a model's hits can be traced to their cause.

`make_demo_plate` is pure (one `np.random.default_rng(seed)`, no I/O); `write_demo_plate` writes it.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import typer
from scipy import ndimage

from cytoops.plate import FORMATS

log = logging.getLogger(__name__)

PLATE_ID = "demo-plate-1"
CHANNELS = ("actin", "mito", "nucleus")
FORMAT, SIZE = 384, 64
ROWS, COLS = string.ascii_uppercase[: FORMATS[FORMAT][0]], FORMATS[FORMAT][1]
CUTOFF = 15  # the study drops a cytokine with fewer balanced wells than this (2 * min(pos, neg))
FACTORS = ("cell_count", "nuclear_size", "actin_intensity", "mito_texture")
PATHWAYS = ("JAK-STAT", "NF-κB")
DOSES = (0.3, 1.0, 3.0, 10.0)  # µM
N_COMPOUNDS, N_REPLICATES, N_DMSO, N_CONA = 26, 3, 40, 32
CONA_EFFECT = {"cell_count": 0.6, "nuclear_size": 2.5, "actin_intensity": 1.2, "mito_texture": 0.0}
EDGE_CELL_COUNT, EDGE_GAIN = -0.4, 1.12
WELL_SD = 0.35  # well-to-well biological variation of every latent factor, in factor units

# name: (cause, driver, direction, parameter). parameter: the latent threshold (morphology, pathway),
# P(responder | edge well) (position), or None (noise: prevalence drawn; rare: count drawn).
_SPEC: dict[str, tuple[str, str | None, str | None, float | None]] = {
    "IFN-γ": ("morphology", "nuclear_size", "up", 1.0),
    "IL-2": ("morphology", "nuclear_size", "up", 1.2),
    "GM-CSF": ("morphology", "nuclear_size", "up", 1.4),
    "TNF-α": ("morphology", "nuclear_size", "up", 1.1),
    "IL-1α": ("morphology", "cell_count", "down", 1.0),
    "IL-18": ("morphology", "cell_count", "down", 1.3),
    "IL-8": ("morphology", "actin_intensity", "up", 1.0),
    "CCL2": ("morphology", "actin_intensity", "up", 1.3),
    "IL-6": ("morphology", "mito_texture", "up", 1.0),
    "IL-1β": ("morphology", "mito_texture", "up", 1.3),
    "IL-1RA": ("morphology", "mito_texture", "down", 1.0),
    "CXCL9": ("pathway", "JAK-STAT", "up", 1.0),
    "CXCL10": ("pathway", "JAK-STAT", "up", 0.8),
    "CXCL11": ("pathway", "JAK-STAT", "up", 1.2),
    "IL-12p40/p70": ("pathway", "NF-κB", "up", 1.0),
    "CCL20": ("pathway", "NF-κB", "up", 0.8),
    "MIP-1α": ("pathway", "NF-κB", "up", 1.2),
    "MIP-1β": ("pathway", "NF-κB", "up", 1.4),
    "VEGF-A": ("position", "edge", "up", 0.9),
    "IL-4": ("position", "edge", "up", 0.75),
    "IL-13": ("position", "edge", "up", 0.6),
    "Eotaxin": ("position", "edge", "up", 0.5),
    **{
        name: ("noise", None, None, None)
        for name in ("IL-10", "IL-17A", "CCL5", "IL-15", "IL-7", "TGF-β1", "IL-9", "IL-22", "IL-5")
    },
    **{
        name: ("rare", None, None, None)
        for name in (
            "APRIL",
            "Activin A",
            "Amphiregulin",
            "CCL1",
            "IL-16",
            "IL-3",
            "IL-21",
            "IL-23",
            "IL-27",
            "IL-31",
            "IL-33",
            "TSLP",
            "LIF",
            "M-CSF",
            "G-CSF",
            "FGF-2",
            "PDGF-BB",
            "CX3CL1",
            "IFN-α2",
        )
    },
}
# The assay exports analytes in ASCII order, as the seed's table does (APRIL, Activin A, Amphiregulin, CCL1).
CYTOKINES: tuple[str, ...] = tuple(sorted(_SPEC))

FACTOR_DEFINITIONS = {
    "cell_count": "cells per well = Poisson(26 * exp(0.45 * f)), clipped to 10..50",
    "nuclear_size": "nuclear radius = 2.4 px * exp(0.14 * f)",
    "actin_intensity": "actin brightness = 800 photons * exp(0.35 * f)",
    "mito_texture": "fraction of punctate (vs reticular) mitochondrial signal = logistic(1.1 * f - 0.4)",
    "pathway": "hidden activity of JAK-STAT and NF-κB; no visible phenotype",
    "edge": (
        f"rows A/P and columns 1/24: cell_count {EDGE_CELL_COUNT:+}, all channels x{EDGE_GAIN} (evaporation)"
    ),
    "units": (
        f"each factor is 0 for DMSO; compound dose-response (Hill 1.5) plus well noise sd {WELL_SD}; "
        f"Con-A: {CONA_EFFECT} and clustered (agglutinated) cells"
    ),
}


@dataclass(frozen=True, eq=False)
class DemoPlate:
    plate_id: str
    wells: tuple[str, ...]  # canonical A01..P24, row-major
    images: np.ndarray  # uint16 (384, 3, 64, 64): actin, mito, nucleus
    layout: pd.DataFrame  # well, treatment, concentration, role
    cytokines: pd.DataFrame  # well, then one column per cytokine: the cells as written (strings)
    embeddings: pd.DataFrame  # well, emb_00..emb_31
    truth: dict  # JSON-serialisable: what drives each cytokine


def _layout(rng: np.random.Generator, wells: tuple[str, ...]) -> pd.DataFrame:
    rows = [("DMSO", 0.0, "negative_control")] * N_DMSO + [("Con-A", 5.0, "positive_control")] * N_CONA
    rows += [
        (f"CPD-{c + 1:03d}", d, "sample")
        for c in range(N_COMPOUNDS)
        for d in DOSES
        for _ in range(N_REPLICATES)
    ]
    assert len(rows) == len(wells)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return pd.DataFrame(
        {
            "well": wells,
            "treatment": [r[0] for r in rows],
            "concentration": [r[1] for r in rows],
            "role": [r[2] for r in rows],
        }
    )


def _compound_effects(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Emax per compound for each factor and pathway. Pathway hitters have no visible phenotype."""
    names = [f"CPD-{c + 1:03d}" for c in range(N_COMPOUNDS)]
    ec50 = np.exp(rng.uniform(np.log(0.5), np.log(5.0), N_COMPOUNDS))  # µM
    effects = {
        n: {k: 0.0 for k in FACTORS + PATHWAYS} | {"ec50": round(float(e), 4)}
        for n, e in zip(names, ec50, strict=True)
    }
    order = rng.permutation(N_COMPOUNDS)
    for p, pathway in enumerate(PATHWAYS):
        for i in order[4 * p : 4 * p + 4]:
            effects[names[i]][pathway] = round(float(rng.uniform(2.0, 3.0)), 4)
    visible = order[4 * len(PATHWAYS) :]
    n_up_down = {
        "cell_count": (1, 3),
        "nuclear_size": (3, 2),
        "actin_intensity": (3, 2),
        "mito_texture": (3, 3),
    }
    for factor, (n_up, n_down) in n_up_down.items():
        chosen = rng.choice(visible, n_up + n_down, replace=False)
        for j, i in enumerate(chosen):
            effects[names[i]][factor] = round(float(rng.uniform(1.8, 3.0)) * (1 if j < n_up else -1), 4)
    return effects


def _latents(rng, layout, effects, edge) -> dict[str, np.ndarray]:
    n = len(layout)
    lat = {k: np.zeros(n) for k in FACTORS + PATHWAYS}
    for w, (treatment, dose) in enumerate(zip(layout.treatment, layout.concentration, strict=True)):
        if treatment == "Con-A":
            for k, v in CONA_EFFECT.items():
                lat[k][w] = v
        elif treatment in effects:
            e = effects[treatment]
            hill = dose**1.5 / (dose**1.5 + e["ec50"] ** 1.5)
            for k in FACTORS + PATHWAYS:
                lat[k][w] = e[k] * hill
    for k in FACTORS + PATHWAYS:
        lat[k] += rng.normal(0, WELL_SD, n)
    lat["cell_count"] += EDGE_CELL_COUNT * edge
    return lat


def _place(rng: np.random.Generator, n: int, dmin: float, clustered: bool) -> np.ndarray:
    """Random sequential adsorption: nuclei never overlap, cell bodies may touch."""
    if clustered:  # Con-A agglutinates cells into a few clumps
        centers = rng.uniform(12, SIZE - 12, (int(rng.integers(2, 5)), 2))
        cand = centers[rng.integers(0, len(centers), 12 * n)] + rng.normal(0, 7, (12 * n, 2))
    else:
        cand = rng.uniform(0, SIZE, (8 * n, 2))
    d2 = ((cand[:, None] - cand[None]) ** 2).sum(-1)
    blocked = np.zeros(len(cand), bool)
    kept = []
    for i in range(len(cand)):
        if not blocked[i]:
            kept.append(i)
            blocked |= d2[i] < dmin**2
            if len(kept) == n:
                break
    return cand[kept]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _render_well(rng: np.random.Generator, n_cells: int, lat: dict, clustered: bool) -> np.ndarray:
    """Photon signal (3, 64, 64) of one well, before vignetting and camera noise."""
    r0 = 2.4 * np.exp(0.14 * lat["nuclear_size"])
    xy = _place(rng, n_cells, 2.1 * r0, clustered)
    n = len(xy)
    yy, xx = (np.mgrid[0:SIZE, 0:SIZE] + 0.5).astype(np.float32)
    # nuclei: compact ellipses with a soft edge
    r = r0 * rng.lognormal(0, 0.1, n)
    elong = rng.uniform(1.0, 1.25, n)
    theta = rng.uniform(0, np.pi, n)
    xy = xy.astype(np.float32)
    dx, dy = xx[None] - xy[:, 0, None, None], yy[None] - xy[:, 1, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (dx * c + dy * s) / (r * elong)[:, None, None]
    v = (dy * c - dx * s) * (elong / r)[:, None, None]
    u, v = u.astype(np.float32), v.astype(np.float32)
    nuc_cells = _sigmoid((1 - np.sqrt(u**2 + v**2)) / 0.15)
    nuc_mask = nuc_cells.sum(0)
    chromatin = 1 + 0.15 * ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 0.7) / 0.3
    nucleus = (1800 * rng.lognormal(0, 0.15, n))[:, None, None] * nuc_cells
    nucleus = nucleus.sum(0) * chromatin
    # cell bodies: irregular outlines around each nucleus; touching cells split the space between them
    big_r = r * rng.uniform(2.0, 2.8, n)
    bx = dx - rng.normal(0, 0.2, n)[:, None, None] * big_r[:, None, None]
    by = dy - rng.normal(0, 0.2, n)[:, None, None] * big_r[:, None, None]
    bx, by = bx.astype(np.float32), by.astype(np.float32)
    dist = np.sqrt(bx**2 + by**2) + np.float32(1e-6)
    unit = (bx + 1j * by) / dist  # e^(i phi), so that outline harmonics need no trigonometry per pixel
    outline, power = np.ones_like(dist), np.ones_like(unit)
    for amp in (0.0, 0.3, 0.2, 0.12, 0.0, 0.08):  # harmonics 1 to 6 of the outline
        power = power * unit
        if amp:
            a = rng.uniform(0, amp, n) * np.exp(1j * rng.uniform(0, 2 * np.pi, n))
            outline += (a.astype(np.complex64)[:, None, None] * power).real
    ragged = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.2).astype(np.float32) * 0.6
    rho = dist / (big_r.astype(np.float32)[:, None, None] * outline) + ragged
    if n == 1:
        rho = np.concatenate([rho, rho + 9])
    nearest = np.argpartition(rho, 1, axis=0)[:2]
    owner = nearest[0]
    two = np.take_along_axis(rho, nearest, axis=0)
    rho1 = two[0]
    body = _sigmoid((1 - rho1) / 0.12)
    cortex = np.exp(-(((1 - rho1) / 0.15) ** 2)) + 0.5 * np.exp(-(((two[1] - rho1) / 0.12) ** 2))
    # stress fibres: short oriented segments, one direction per cell
    psi = rng.uniform(0, np.pi, n)[owner]
    wavelength = rng.uniform(2.6, 4.0, n)[owner]
    along = xx * np.cos(psi) + yy * np.sin(psi)
    stripes = np.cos(2 * np.pi * along / wavelength + rng.uniform(0, 2 * np.pi, n)[owner])
    breaks = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 0.9)
    fibres = 1 + 0.5 * np.clip(stripes, 0, None) * (breaks > 0.05) - 0.15
    per_cell = rng.lognormal(0, 0.2, n)[owner]
    actin = 800 * np.exp(0.35 * lat["actin_intensity"]) * per_cell * body * (0.5 + 0.55 * cortex) * fibres
    # mitochondria: perinuclear; a soft reticular network, or (high mito_texture) discrete bright puncta
    white = rng.standard_normal((SIZE, SIZE))
    band = ndimage.gaussian_filter(white, 1.0) - ndimage.gaussian_filter(white, 2.0)
    tubular = ndimage.gaussian_filter(np.exp(-2 * (band / band.std()) ** 2), 0.6)
    puncta = ndimage.gaussian_filter((rng.random((SIZE, SIZE)) < 0.1).astype(float), 0.6)
    frac = 1 / (1 + np.exp(-(1.1 * lat["mito_texture"] - 0.4)))
    texture = (1 - frac) * tubular / tubular.mean() + frac * puncta / max(puncta.mean(), 1e-9)
    near = np.exp(
        -(np.clip(rho1 - 0.35, 0, None) ** 2) / 0.18
    )  # dense around the nucleus, sparse at the edge
    density = body * near * (1 - 0.6 * np.clip(nuc_mask, 0, 1))
    mito = 450 * rng.lognormal(0, 0.1) * density * texture
    return np.stack([actin, mito, nucleus])


def _images(rng: np.random.Generator, lat: dict[str, np.ndarray], layout: pd.DataFrame, edge: np.ndarray):
    n_wells = len(layout)
    n_cells = np.clip(rng.poisson(26 * np.exp(0.45 * lat["cell_count"])), 10, 50)
    signal = np.empty((n_wells, 3, SIZE, SIZE))
    for w in range(n_wells):
        well_lat = {k: lat[k][w] for k in FACTORS}
        signal[w] = _render_well(rng, int(n_cells[w]), well_lat, layout.treatment.iat[w] == "Con-A")
    signal = ndimage.gaussian_filter(signal, (0, 0, 0.5, 0.5))  # optics
    signal += np.array([60.0, 40.0, 30.0])[None, :, None, None]  # autofluorescence
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5 - SIZE / 2
    vignette = 1 - 0.18 * (xx**2 + yy**2) / (2 * (SIZE / 2) ** 2)
    signal *= vignette * np.where(edge, EDGE_GAIN, 1.0)[:, None, None, None]
    counts = rng.poisson(signal) + 100 + rng.normal(0, 3, signal.shape)  # shot noise, offset, read noise
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16), n_cells


def _labels(rng, lat: dict, edge: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """Per cytokine: responder (bool per well), strength (>= 0: how far above 0 a responder reads), and
    the rule that made them, for truth.json."""
    n = len(edge)
    out = {}
    for name in CYTOKINES:
        cause, driver, direction, param = _SPEC[name]
        strength = np.zeros(n)
        if cause in ("morphology", "pathway"):
            x = lat[driver] * (-1 if direction == "down" else 1)
            resp = x > param
            strength = np.clip(x - param, 0, None)
            resp ^= rng.random(n) < np.where(resp, 0.07, 0.015)  # biology and assay are not a switch
            rule = {
                "rule": f"responder iff {driver} {'<' if direction == 'down' else '>'} "
                f"{-param if direction == 'down' else param}, then 7% of responders and "
                "1.5% of non-responders flipped"
            }
        elif cause == "position":
            resp = rng.random(n) < np.where(edge, param, 0.02)
            rule = {"rule": f"responder with probability {param} on edge wells, 0.02 elsewhere"}
        elif cause == "noise":
            prevalence = float(rng.uniform(0.05, 0.18))
            resp = rng.random(n) < prevalence
            rule = {"rule": f"responder with probability {prevalence:.3f} in every well, whatever was done"}
        else:
            resp = np.zeros(n, bool)
            resp[rng.choice(n, int(rng.integers(0, 8)), replace=False)] = True
            rule = {"rule": "fewer than 8 responders in random wells: below the cut-off"}
        out[name] = (resp, strength, rule)
    return out


def _values(rng, labels) -> np.ndarray:
    """Normalized readouts as the seed has them: 0.0 or small negatives, positive for responders."""
    n = len(next(iter(labels.values()))[0])
    values = np.zeros((n, len(CYTOKINES)))
    for j, name in enumerate(CYTOKINES):
        resp, strength, _ = labels[name]
        levels = -np.round(rng.uniform(0.01, 0.5, 3), 6)  # quantized raw readouts -> few distinct values
        neg = np.where(rng.random(n) < 0.6, 0.0, levels[rng.integers(0, 3, n)])
        pos = np.clip(rng.lognormal(np.log(0.6 + 0.5 * strength), 0.4), 0.05, 3.0)
        values[:, j] = np.round(np.where(resp, pos, neg), 6)
    return values


def _cells(rng, values: np.ndarray, labels) -> tuple[pd.DataFrame, np.ndarray]:
    """Format as the assay writes, with a few warts: NA, `OOR >`, `OOR <`, `*` (extrapolated)."""
    resp = np.stack([labels[name][0] for name in CYTOKINES], axis=1)
    cells = np.array([[repr(float(v)) for v in row] for row in values], dtype=object)
    used = np.zeros(values.shape, bool)
    passing = [j for j in range(len(CYTOKINES)) if resp[:, j].sum() >= 8]
    for j in rng.choice(passing, 4, replace=False):  # above the standard curve: the top responder
        i = int(np.argmax(values[:, j]))
        cells[i, j], used[i, j] = "OOR >", True
    for j in rng.choice(len(CYTOKINES), 4, replace=False):  # below the curve: the lowest non-responder
        i = int(np.argmin(np.where(resp[:, j], np.inf, values[:, j])))
        cells[i, j], used[i, j] = "OOR <", True
    candidates = np.argwhere(resp & ~used)
    for i, j in candidates[rng.choice(len(candidates), 6, replace=False)]:
        cells[i, j], used[i, j] = "*" + cells[i, j], True
    free = np.argwhere(~used)
    missing = np.zeros(values.shape, bool)
    for i, j in free[rng.choice(len(free), 10, replace=False)]:
        cells[i, j], missing[i, j] = "NA", True
    return pd.DataFrame(cells, columns=list(CYTOKINES)), missing


def _embeddings(rng, lat: dict[str, np.ndarray], wells) -> pd.DataFrame:
    z = np.stack([lat[k] for k in FACTORS], axis=1)
    z = (z - z.mean(0)) / z.std(0)
    informative = z @ rng.normal(0, 1, (len(FACTORS), 20)) + rng.normal(0, 3.0, (len(wells), 20))
    noise = rng.normal(0, informative.std(), (len(wells), 12))
    emb = np.concatenate([informative, noise], axis=1)[:, rng.permutation(32)]
    return pd.DataFrame({"well": wells} | {f"emb_{k:02d}": np.round(emb[:, k], 5) for k in range(32)})


def null_labels(labels: dict, rng: np.random.Generator) -> dict:
    """Every cytokine made noise: its responders shuffled over the wells (prevalence kept, any link to the
    images, the position or the treatment broken)."""
    out = {}
    for name, (resp, strength, _) in labels.items():
        order = rng.permutation(len(resp))
        out[name] = (
            resp[order],
            strength[order],
            {"rule": "null plate: this cytokine's responders shuffled over the wells (noise by design)"},
        )
    return out


def make_demo_plate(seed: int = 0, null: bool = False) -> DemoPlate:
    """Generate the plate in memory. Pure: the same seed gives the same plate. `null`: the same images, and
    every cytokine noise (`null_labels`), to measure a test's false-call rate."""
    rng = np.random.default_rng(seed)
    wells = tuple(f"{r}{c:02d}" for r in ROWS for c in range(1, COLS + 1))
    edge = np.array([w[0] in (ROWS[0], ROWS[-1]) or int(w[1:]) in (1, COLS) for w in wells])
    layout = _layout(rng, wells)
    effects = _compound_effects(rng)
    lat = _latents(rng, layout, effects, edge)
    images, n_cells = _images(rng, lat, layout, edge)
    labels = _labels(rng, lat, edge)
    if null:
        labels = null_labels(labels, np.random.default_rng([seed, 1]))
    cells, missing = _cells(rng, _values(rng, labels), labels)
    cytokines = pd.concat([pd.DataFrame({"well": wells}), cells], axis=1)
    embeddings = _embeddings(rng, lat, wells)
    per_cytokine = {}
    for j, name in enumerate(CYTOKINES):
        cause, driver, direction, _ = _SPEC[name]
        if null and cause != "rare":
            cause, driver, direction = "noise", None, None
        resp, _, rule = labels[name]
        resp = resp[~missing[:, j]]  # a missing cell is neither responder nor non-responder
        n_pos, n_neg = int(resp.sum()), int((~resp).sum())
        per_cytokine[name] = {
            "cause": cause,
            "driver": driver,
            "direction": direction,
            **rule,
            "n_responders": n_pos,
            "n_non_responders": n_neg,
            "n_missing": int(missing[:, j].sum()),
            "balanced_wells": 2 * min(n_pos, n_neg),
            "passes_cutoff": 2 * min(n_pos, n_neg) >= CUTOFF,
        }
    truth = {
        "seed": seed,
        "null": null,
        "plate_id": PLATE_ID,
        "cutoff_balanced_wells": CUTOFF,
        "responder": "value > 0.0",
        "concentration_units": "µM for compounds; DMSO 0 (vehicle); Con-A 5 µg/mL",
        "factors": FACTOR_DEFINITIONS,
        "compounds": effects,
        "cytokines": per_cytokine,
        "wells": [
            {"well": w, "edge": bool(edge[i]), "n_cells": int(n_cells[i])}
            | {k: round(float(lat[k][i]), 4) for k in FACTORS + PATHWAYS}
            for i, w in enumerate(wells)
        ],
    }
    return DemoPlate(PLATE_ID, wells, images, layout, cytokines, embeddings, truth)


def write_demo_plate(demo: DemoPlate, data_dir: Path) -> Path:
    """Write data_dir/<plate_id>/ in the raw plate format, plus truth.json. Same plate, same bytes."""
    folder = Path(data_dir) / demo.plate_id
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for well, image in zip(demo.wells, demo.images, strict=True):
        file = folder / "images" / f"{well}.tif"  # zlib is in the standard library; tifffile writes no date
        tifffile.imwrite(file, image, photometric="minisblack", compression="zlib")
    tables = {"cytokines": demo.cytokines, "layout": demo.layout, "embeddings": demo.embeddings}
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n", encoding="utf-8")
    plate_yaml = f'channels: [{", ".join(CHANNELS)}]\nimage_pattern: "{{well}}.tif"\nformat: {FORMAT}\n'
    (folder / "plate.yaml").write_text(plate_yaml, encoding="utf-8")
    (folder / "truth.json").write_text(
        json.dumps(demo.truth, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return folder


def _stretch(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, Y, X) -> (Y, X, 3) RGB: actin red, mito green, nucleus blue."""
    rgb = (image.astype(float) - lo[:, None, None]) / (hi - lo)[:, None, None]
    return np.clip(rgb, 0, 1).transpose(1, 2, 0)


def save_montage(demo: DemoPlate, path: Path) -> None:
    """PNG: controls, Con-A, strongest compound phenotypes, edge wells, and one well's three channels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = demo.layout.assign(edge=[w["edge"] for w in demo.truth["wells"]])
    inner = lay[~lay.edge]
    rows = [
        [(w, "DMSO") for w in inner.well[inner.treatment == "DMSO"][:4]],
        [(w, "Con-A") for w in inner.well[inner.treatment == "Con-A"][:4]],
    ]
    phenos = []  # the sample well that shows each phenotype most cleanly (other factors modest)
    lat = pd.DataFrame(demo.truth["wells"]).set_index("well")
    phenotypes = (
        ("cell_count", -1, "fewer cells"),
        ("nuclear_size", 1, "larger nuclei"),
        ("actin_intensity", 1, "brighter actin"),
        ("mito_texture", 1, "punctate mito"),
    )
    for factor, sign, label in phenotypes:
        others = lat[[f for f in FACTORS if f != factor]].abs().max(axis=1)
        score = (sign * lat[factor] - others)[inner.well[inner.role == "sample"]]
        well = score.drop([w for w, _ in phenos], errors="ignore").idxmax()
        row = lay.iloc[demo.wells.index(well)]
        phenos.append((well, f"{row.treatment} {row.concentration:g} µM\n{label}"))
    rows.append(phenos)
    edge_wells = lay[lay.edge & (lay.treatment == "DMSO")].well.tolist() + lay[lay.edge].well.tolist()
    rows.append([(w, f"{lay.treatment.iat[demo.wells.index(w)]}, edge well") for w in edge_wells[:2]])
    index = {w: i for i, w in enumerate(demo.wells)}
    shown = demo.images[[index[w] for row in rows for w, _ in row]]
    lo = np.percentile(shown, 1, axis=(0, 2, 3))
    hi = np.percentile(shown, 99.5, axis=(0, 2, 3))
    fig, axes = plt.subplots(5, 4, figsize=(8, 11.2), dpi=110)
    for r, row in enumerate(rows):
        for c in range(4):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(row):
                well, label = row[c]
                ax.imshow(_stretch(demo.images[index[well]], lo, hi), interpolation="nearest")
                ax.set_title(f"{well} {label}", fontsize=8)
    well = rows[0][0][0]
    for c, name in enumerate(CHANNELS):  # one well's channels, each stretched on its own
        ax = axes[4, c]
        plane = demo.images[index[well], c]
        ax.imshow(
            plane,
            cmap="gray",
            interpolation="nearest",
            vmin=np.percentile(plane, 1),
            vmax=np.percentile(plane, 99.7),
        )
        ax.set_title(f"{well} DMSO: {name} only", fontsize=8)
        ax.axis("off")
    axes[4, 3].axis("off")
    fig.suptitle(
        f"{demo.plate_id} (simulated, seed {demo.truth['seed']}): 64x64 thumbnails, "
        "actin red, mito green, nucleus blue;\nrows 1-4 share one stretch per channel",
        fontsize=8.5,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def command(
    out_dir: Path = typer.Argument(..., help="Data folder; the plate is written to OUT_DIR/demo-plate-1/."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    null: bool = typer.Option(
        False, "--null", help="Same images, every cytokine noise: measures a test's false-call rate."
    ),
    montage: Path | None = typer.Option(None, "--montage", help="Also save a PNG montage of example wells."),
) -> None:
    """Write a simulated 384-well demo plate with known truth (truth.json) in the raw plate format."""
    out_dir.mkdir(parents=True, exist_ok=True)  # a file in the way fails here, before the simulation
    demo = make_demo_plate(seed, null=null)
    folder = write_demo_plate(demo, out_dir)
    if montage is not None:
        save_montage(demo, montage)
        log.info(f"montage: {montage}")
    info = demo.truth["cytokines"].values()
    causes = {}
    for c in info:
        causes[c["cause"]] = causes.get(c["cause"], 0) + 1
    kept = sum(c["passes_cutoff"] for c in info)
    log.info(f"wrote {folder}")
    log.info(
        f"{len(demo.wells)} wells, {len(CYTOKINES)} cytokines, {kept} pass the {CUTOFF}-well cut-off; "
        f"causes: {', '.join(f'{k} {v}' for k, v in causes.items())}"
    )
