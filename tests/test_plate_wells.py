"""cytoops.plate.wells and slugs: well names in every spelling, cytokine names as slugs."""

from __future__ import annotations

import pytest

from cytoops.plate import canonical_well, slugify, well_row_col


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [("A1", None, "A01"), ("a01", None, "A01"), ("A001", None, "A01"), (" p24 ", 384, "P24"),
     ("AF48", 1536, "AF48"), ("h12", 96, "H12"), ("B3", None, "B03")],
)  # fmt: skip
def test_canonical_well_accepts_spellings(text, fmt, expected):
    assert canonical_well(text, fmt) == expected


@pytest.mark.parametrize(
    ("text", "fmt", "match"),
    [("", None, "is not a well name"), ("A", None, "is not a well name"), ("11", None, "is not a well name"),
     ("A0", None, "is not a well name"), ("A49", None, "is not a well name"),
     ("AG01", None, "is not a well name"), ("A0001", None, "is not a well name"), ("2A", None, "not a well"),
     ("I01", 96, "outside a 96-well plate"), ("A13", 96, "outside a 96-well plate"),
     ("Q01", 384, r"outside a 384-well plate \(rows A-P, columns 1-24\)")],
)  # fmt: skip
def test_canonical_well_rejects(text, fmt, match):
    with pytest.raises(ValueError, match=match):
        canonical_well(text, fmt)


def test_well_row_col():
    assert well_row_col("B03") == (1, 2)
    assert well_row_col("a1") == (0, 0)
    assert well_row_col("AF48") == (31, 47)


@pytest.mark.parametrize(
    ("name", "slug"),
    [("TNF-α", "TNF-alpha"), ("IFN-γ", "IFN-gamma"), ("IL-12p40/p70", "IL-12p40_p70"),
     ("Activin A", "Activin_A"), ("IL-1β", "IL-1beta"), (" MIP-1α (CCL3) ", "MIP-1alpha_CCL3"),
     ("IL-6", "IL-6"), ("TGF-β1 µg/ml", "TGF-beta1_mug_ml"), ("Café--IL..8", "Cafe--IL..8")],
)  # fmt: skip
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_slugify_rejects_a_name_without_letters():
    with pytest.raises(ValueError, match="no letter or digit"):
        slugify("/ -")
