"""Shared fixtures. Tests build their data in code: `tiny_plate` writes small valid plates on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

TINY_WELLS = ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04")
TINY_CYTOKINES = ("IL-6", "TNF-α", "IL-12p40/p70")
TINY_CHANNELS = ("actin", "mito", "nucleus")
# 4 treatments x 2 replicates: (treatment, concentration, role) for the wells in TINY_WELLS order
TINY_LAYOUT = (
    ("DMSO", "", "negative_control"),
    ("DMSO", "", "negative_control"),
    ("LPS", "100", "positive_control"),
    ("LPS", "100", "positive_control"),
    ("drug-a", "1.5", "sample"),
    ("drug-a", "1.5", "sample"),
    ("drug-b", "10", "sample"),
    ("drug-b", "10", "sample"),
)


def spell_well(well: str, style: str) -> str:
    """Write a canonical well ("A01") in another spelling: "A01", "A1", "a01" or "A001"."""
    row, column = well.rstrip("0123456789"), int(well.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    spellings = {"A01": f"{row}{column:02d}", "A1": f"{row}{column}", "a01": f"{row.lower()}{column:02d}"}
    return spellings.get(style, f"{row}{column:03d}")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def tiny_plate(tmp_path):
    """Factory: `tiny_plate(**options) -> data_dir` writes one valid plate folder into
    `tmp_path / "data" / plate_id` and returns the data dir (call it again with another plate_id for
    a multi-plate data dir). By default: 8 wells A01-A04, B01-B04; 3 channels (actin, mito, nucleus);
    16x16 uint16 images `{well}.tif` shaped (3, 16, 16); cytokines.csv with IL-6, TNF-α, IL-12p40/p70
    (numbers with 4 decimals); layout.csv with 4 treatments x 2 replicates (DMSO negative_control,
    LPS positive_control, drug-a and drug-b samples); embeddings.csv with 4 columns emb_0..emb_3;
    no plate.yaml. Options (keyword only):

    - plate_id="plate-1": the folder name.
    - seed=0: pixel values and readouts.
    - image_pattern="{well}.tif": or "{well}_{channel}.tif" (one 2-D file per channel); a
      non-default pattern is written to plate.yaml.
    - channels=TINY_CHANNELS, size=16, dtype="uint16": the images.
    - well_style="A01": how wells are spelled in file names and CSVs: "A01", "A1", "a01" or "A001".
    - cytokines=TINY_CYTOKINES: the readout columns.
    - cells={}: {(well, cytokine): text} overriding readout cells, e.g. {("A01", "IL-6"): "OOR <"}.
    - no_image=(): wells whose image files are not written (their readouts stay).
    - no_readouts=(): wells left out of cytokines.csv (their images stay).
    - extra_readouts=(): extra wells given a readouts row (and no image), e.g. ("C01",).
    - plate_column=False: add a `plate` column holding plate_id to cytokines.csv.
    - layout=True, embeddings=True, readouts=True: write layout.csv, embeddings.csv, cytokines.csv.
    - plate_yaml=None: extra plate.yaml keys, merged over the written ones ({"format": 384}).
    """

    def make(
        *,
        plate_id: str = "plate-1",
        seed: int = 0,
        image_pattern: str = "{well}.tif",
        channels: tuple[str, ...] = TINY_CHANNELS,
        size: int = 16,
        dtype: str = "uint16",
        well_style: str = "A01",
        cytokines: tuple[str, ...] = TINY_CYTOKINES,
        cells: dict[tuple[str, str], str] | None = None,
        no_image: tuple[str, ...] = (),
        no_readouts: tuple[str, ...] = (),
        extra_readouts: tuple[str, ...] = (),
        plate_column: bool = False,
        layout: bool = True,
        embeddings: bool = True,
        readouts: bool = True,
        plate_yaml: dict | None = None,
    ) -> Path:
        rng = np.random.default_rng(seed)
        data_dir = tmp_path / "data"
        plate = data_dir / plate_id
        (plate / "images").mkdir(parents=True)
        config = {} if image_pattern == "{well}.tif" else {"image_pattern": image_pattern}
        if tuple(channels) != TINY_CHANNELS:
            config["channels"] = list(channels)
        config.update(plate_yaml or {})
        if config:
            (plate / "plate.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

        high = 1.0 if dtype.startswith("float") else min(np.iinfo(dtype).max, 4000)
        for well in TINY_WELLS:
            if well in no_image:
                continue
            image = (rng.random((len(channels), size, size)) * high).astype(dtype)
            name = spell_well(well, well_style)
            if "{channel}" in image_pattern:
                for channel, plane in zip(channels, image, strict=True):
                    file = plate / "images" / image_pattern.format(well=name, channel=channel)
                    tifffile.imwrite(file, plane, photometric="minisblack")
            else:
                tifffile.imwrite(
                    plate / "images" / image_pattern.format(well=name), image, photometric="minisblack"
                )

        cells = cells or {}
        readout_wells = [w for w in TINY_WELLS if w not in no_readouts] + list(extra_readouts)
        if readouts:
            header = ["well", *(["plate"] if plate_column else []), *cytokines]
            rows = []
            for well in readout_wells:
                values = [cells.get((well, name), f"{rng.normal():.4f}") for name in cytokines]
                rows.append([spell_well(well, well_style), *([plate_id] if plate_column else []), *values])
            _write_csv(plate / "cytokines.csv", header, rows)
        if layout:
            rows = [
                [spell_well(w, well_style), *spec] for w, spec in zip(TINY_WELLS, TINY_LAYOUT, strict=True)
            ]
            _write_csv(plate / "layout.csv", ["well", "treatment", "concentration", "role"], rows)
        if embeddings:
            rows = [
                [spell_well(w, well_style), *(f"{v:.5f}" for v in rng.normal(size=4))] for w in TINY_WELLS
            ]
            _write_csv(plate / "embeddings.csv", ["well", "emb_0", "emb_1", "emb_2", "emb_3"], rows)
        return data_dir

    return make
