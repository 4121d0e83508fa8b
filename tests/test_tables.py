"""tables.read: a stage's CSV comes back with the types it was written with."""

import pandas as pd
import pytest

from cytoops import tables


def test_a_stage_table_reads_back_with_its_types(tmp_path):
    # identifiers stay strings, flags come back bools (not the strings 'True' and 'False')
    path = tmp_path / "cytokines.csv"
    pd.DataFrame(
        {"cytokine": ["NA", "IL-6"], "plate": ["001", "002"], "kept": [True, False], "n_pos": [3, 4]}
    ).to_csv(path, index=False)
    got = tables.read(path, empty_is_missing=False)
    assert got.cytokine.tolist() == ["NA", "IL-6"] and got.plate.tolist() == ["001", "002"]
    assert got.kept.dtype == bool and got.kept.tolist() == [True, False]
    path.write_text("cytokine,kept\nIL-6,True\nIL-8,maybe\n")
    match = r"cytokines.csv: column kept must be True or False; row 3 has 'maybe'"
    with pytest.raises(ValueError, match=match):
        tables.read(path)
