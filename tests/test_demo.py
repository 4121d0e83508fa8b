"""The simulated demo plate: deterministic, in the plate format, and its truth.json tells the truth."""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats
from typer.testing import CliRunner

from cytoops import demo

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@pytest.fixture(scope="module")
def plate0() -> demo.DemoPlate:
    return demo.make_demo_plate(0)


@pytest.fixture(scope="module")
def written(plate0, tmp_path_factory) -> Path:
    return demo.write_demo_plate(plate0, tmp_path_factory.mktemp("data"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _responders(column: pd.Series) -> pd.Series:
    """Responder per well from cells as written: NA dropped, `OOR >` above, `OOR <` below, `*x` is x."""
    column = column[column != "NA"]
    return column.map(lambda cell: cell == "OOR >" or (cell != "OOR <" and float(cell.lstrip("*")) > 0.0))


def _image_stats(image: np.ndarray) -> dict[str, float]:
    """Crude per-well measurements, one per visible factor, from the 64x64 thumbnail alone."""
    actin, mito, nucleus = image.astype(float) - 100.0  # camera offset
    smooth = ndimage.gaussian_filter(nucleus, 0.8)
    on = smooth > 0.35 * np.percentile(smooth, 99.5)
    blobs = int(((smooth == ndimage.maximum_filter(smooth, 3)) & on).sum())
    cells = ndimage.gaussian_filter(actin, 1.0) > 0.3 * np.percentile(actin, 99)
    mito_smooth = ndimage.gaussian_filter(mito, 1.5)
    mito_on = mito_smooth > 0.3 * np.percentile(mito_smooth, 99)
    return {
        "cell_count": blobs,
        "nuclear_size": on.sum() / max(blobs, 1),
        "actin_intensity": actin[cells].mean(),
        "mito_texture": (mito - mito_smooth)[mito_on].std() / mito[mito_on].mean(),
    }


@pytest.fixture(scope="module")
def image_stats(plate0) -> pd.DataFrame:
    return pd.DataFrame([_image_stats(image) for image in plate0.images], index=list(plate0.wells))


def test_shapes_and_dtypes(plate0):
    assert plate0.plate_id == "demo-plate-1"
    assert plate0.images.shape == (384, 3, 64, 64) and plate0.images.dtype == np.uint16
    assert plate0.wells[:3] == ("A01", "A02", "A03") and plate0.wells[-1] == "P24"
    assert len(set(plate0.wells)) == 384
    assert list(plate0.layout.columns) == ["well", "treatment", "concentration", "role"]
    assert list(plate0.cytokines.columns) == ["well", *demo.CYTOKINES]
    assert list(plate0.embeddings.columns) == ["well", *(f"emb_{k:02d}" for k in range(32))]
    for frame in (plate0.layout, plate0.cytokines, plate0.embeddings):
        assert tuple(frame.well) == plate0.wells
    json.dumps(plate0.truth)  # serialisable
    n_cells = [w["n_cells"] for w in plate0.truth["wells"]]
    assert min(n_cells) >= 10 and max(n_cells) <= 50
    assert (plate0.images > 0).all() and plate0.images.max() < 20000  # offset, no saturation


def test_cytokine_names():
    assert len(demo.CYTOKINES) == 50
    assert list(demo.CYTOKINES[:4]) == ["APRIL", "Activin A", "Amphiregulin", "CCL1"]  # as in the seed
    for name in ("GM-CSF", "IFN-γ", "IL-6", "TNF-α", "IL-12p40/p70", "IL-1β", "IL-8", "CXCL10", "MIP-1α"):
        assert name in demo.CYTOKINES

    def slug(name: str) -> str:  # the strictest reading: lower-case, Greek spelled out, the rest "_"
        greek = {"α": "alpha", "β": "beta", "γ": "gamma", "κ": "kappa"}
        plain = "".join(greek.get(c, c) for c in name.lower())
        assert unicodedata.normalize("NFKD", plain).isascii(), name
        return re.sub(r"[^A-Za-z0-9_.-]", "_", plain)

    assert len({slug(name) for name in demo.CYTOKINES}) == 50


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path):
    state = np.random.get_state()[1].copy()
    again = demo.write_demo_plate(demo.make_demo_plate(0), tmp_path / "again")
    assert (np.random.get_state()[1] == state).all(), "make_demo_plate must not touch the global RNG"
    first, second = _files(written), _files(again)
    assert len(first) == 384 + 5 and first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    other = _files(demo.write_demo_plate(demo.make_demo_plate(1), tmp_path / "other"))
    assert other.keys() == first.keys()
    assert other["cytokines.csv"] != first["cytokines.csv"]
    assert other["images/A01.tif"] != first["images/A01.tif"]


def test_written_files_parse_and_are_small(written, plate0):
    assert sum(len(b) for b in _files(written).values()) < 10e6
    layout = pd.read_csv(written / "layout.csv")
    assert set(layout.role) == {"negative_control", "positive_control", "sample"}
    assert layout.concentration.notna().all()
    assert (layout.treatment.value_counts()[lambda c: c.index.str.startswith("CPD-")] >= 8).all()
    emb = pd.read_csv(written / "embeddings.csv")
    assert emb.shape == (384, 33) and emb.drop(columns="well").dtypes.eq(float).all()
    cells = pd.read_csv(written / "cytokines.csv", dtype=str, keep_default_na=False)
    assert list(cells.columns) == ["well", *demo.CYTOKINES] and len(cells) == 384
    flat = pd.Series(cells.drop(columns="well").to_numpy().ravel())
    # every cell is one of the contract's forms, and each wart is there but rare
    plain = flat[~flat.isin(["NA", "OOR >", "OOR <"])].str.lstrip("*")
    assert plain.map(lambda c: NUMBER.fullmatch(c) is not None).all()
    for wart in ("NA", "OOR >", "OOR <"):
        assert 1 <= (flat == wart).sum() <= 20, wart
    assert 1 <= flat.str.startswith("*").sum() <= 20
    images = sorted(p.name for p in (written / "images").iterdir())
    assert images == [f"{w}.tif" for w in sorted(plate0.wells)]
    plate_yaml = (written / "plate.yaml").read_text(encoding="utf-8")
    assert "format: 384" in plate_yaml and "channels: [actin, mito, nucleus]" in plate_yaml


def test_layout_is_scattered(plate0):
    layout = plate0.layout.assign(row=plate0.layout.well.str[0], col=plate0.layout.well.str[1:])
    for treatment in ("Con-A", "DMSO"):
        wells = layout[layout.treatment == treatment]
        assert wells.row.nunique() >= 10 and wells.col.nunique() >= 12, treatment
    assert (layout.groupby("row").treatment.nunique() >= 8).all()  # no row is a block of one treatment
    assert layout.treatment.value_counts()[["DMSO", "Con-A"]].min() >= 16


def test_cutoff_split(plate0):
    passing = [c["passes_cutoff"] for c in plate0.truth["cytokines"].values()]
    assert sum(passing) >= 25 and passing.count(False) >= 10
    kept = [c["n_responders"] for c in plate0.truth["cytokines"].values() if c["passes_cutoff"]]
    assert np.mean([10 <= k <= 90 for k in kept]) >= 0.8
    causes = pd.Series([c["cause"] for c in plate0.truth["cytokines"].values()]).value_counts()
    assert set(causes.index) == {"morphology", "pathway", "position", "noise", "rare"}


def test_truth_matches_written_cytokines(written):
    truth = json.loads((written / "truth.json").read_text(encoding="utf-8"))
    assert truth["seed"] == 0 and truth["plate_id"] == "demo-plate-1"
    cells = pd.read_csv(written / "cytokines.csv", dtype=str, keep_default_na=False)
    for name, info in truth["cytokines"].items():
        responders = _responders(cells[name])
        n_pos, n_neg = int(responders.sum()), int((~responders).sum())
        assert (info["n_responders"], info["n_non_responders"]) == (n_pos, n_neg), name
        assert info["passes_cutoff"] == (2 * min(n_pos, n_neg) >= 15), name
        assert info["cause"] in {"morphology", "pathway", "position", "noise", "rare"}
        if info["cause"] == "rare":
            assert not info["passes_cutoff"], name
    # range flags sit where they belong: above range on responders, below range on non-responders
    flat = cells.set_index("well")
    assert all(_responders(flat[c])[flat[c] == "OOR >"].all() for c in flat.columns)
    assert all(not _responders(flat[c])[flat[c] == "OOR <"].any() for c in flat.columns)


def test_image_statistics_follow_the_truth(plate0, image_stats):
    truth = plate0.truth["cytokines"]
    latent = pd.DataFrame(plate0.truth["wells"]).set_index("well")
    for factor in demo.FACTORS:  # the measurement tracks its factor
        assert stats.spearmanr(image_stats[factor], latent[factor])[0] > 0.6, factor
    hits = []
    for name, info in truth.items():
        responders = _responders(plate0.cytokines.set_index("well")[name])
        if info["cause"] == "morphology":
            measured = image_stats.loc[responders.index, info["driver"]]
            side = "less" if info["direction"] == "down" else "greater"
            p = stats.mannwhitneyu(measured[responders], measured[~responders], alternative=side).pvalue
            assert p < 0.01, (name, info["driver"], p)
        if info["cause"] == "noise":
            for factor in demo.FACTORS:
                measured = image_stats.loc[responders.index, factor]
                hits.append(stats.mannwhitneyu(measured[responders], measured[~responders]).pvalue < 0.01)
    assert len(hits) >= 32 and sum(hits) <= 2  # noise responders look like everyone else


def test_edge_effect_is_visible(plate0, image_stats):
    edge = np.array([w["edge"] for w in plate0.truth["wells"]])
    dmso = (plate0.layout.treatment == "DMSO").to_numpy()
    background = np.percentile(plate0.images[:, 2].reshape(384, -1), 10, axis=1)  # evaporation: brighter
    assert np.median(background[edge]) > np.median(background[~edge])
    assert image_stats.cell_count[edge & dmso].median() <= image_stats.cell_count[~edge & dmso].median()


def test_embeddings_are_informative_but_noisy(plate0):
    x = plate0.embeddings.drop(columns="well").to_numpy()
    x = np.column_stack([x, np.ones(len(x))])
    latent = pd.DataFrame(plate0.truth["wells"])
    for factor in demo.FACTORS:
        y = latent[factor].to_numpy()
        fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
        r2 = 1 - ((y - fit) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert 0.3 < r2 < 0.95, (factor, r2)


def test_command_writes_plate_and_montage(plate0, tmp_path, monkeypatch):
    from cytoops import cli

    monkeypatch.setattr(
        demo, "make_demo_plate", lambda seed, null=False: plate0
    )  # generation is tested above
    png = tmp_path / "montage.png"
    args = ["demo-plate", str(tmp_path / "data"), "--seed", "0", "--montage", str(png)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "demo-plate-1" in result.output and "384 wells" in result.output and "cut-off" in result.output
    assert (tmp_path / "data" / "demo-plate-1" / "cytokines.csv").exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_deep_learning_imports():
    tree = ast.parse(Path(demo.__file__).read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in {"tensorflow", "keras", "vit_keras"}]


def test_plate_reader_reads_the_demo_plate(written):
    plate = pytest.importorskip("cytoops.plate", reason="cytoops/plate (the reader) is not written yet")
    if not hasattr(plate, "read_plate"):
        pytest.skip("cytoops.plate has no read_plate yet")
    read = plate.read_plate(written)
    assert read.plate_id == "demo-plate-1" and read.format == 384
    assert tuple(read.channels) == ("actin", "mito", "nucleus")
    assert len(read.wells) == 384 and read.images.shape == (384, 3, 64, 64)
    assert read.left_out == () and list(read.warnings) == []
    assert list(read.readouts.columns) == list(demo.CYTOKINES)
    truth = json.loads((written / "truth.json").read_text(encoding="utf-8"))
    assert int(read.readouts.isna().sum().sum()) == sum(c["n_missing"] for c in truth["cytokines"].values())


def test_command_into_a_file_is_one_line_before_any_simulation(tmp_path, monkeypatch):
    from cytoops import cli

    def never(*args, **kwargs):
        raise AssertionError("the plate is simulated before the folder is checked")

    monkeypatch.setattr(demo, "make_demo_plate", never)
    (tmp_path / "data").write_text("a file, not a folder")
    result = CliRunner().invoke(cli.app, ["demo-plate", str(tmp_path / "data")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [line] = result.output.splitlines()
    assert line == (
        f"error: {tmp_path / 'data'}: is a file where a folder is needed; "
        "fix: give a folder path, or move the file"
    )
