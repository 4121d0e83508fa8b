"""plate: read raw plates (the contract in docs/plate-format.md) and the `cytoops validate` command.

`read_plate` collects every problem it can find in a plate folder before it raises, so that a user
fixes a plate in one pass. Each problem is one line naming the file, the well or row, and the fix.
Rows of CSV files are numbered as a spreadsheet shows them: the header is row 1.

Strict where a mistake would silently change science (unknown cells, duplicate wells, mixed image
sizes or dtypes), forgiving where exports vary (well spellings, .tif/.TIFF, blank lines, a UTF-8 BOM,
an empty trailing column, range flags). No TensorFlow here: the CLI imports this at start-up.

Modules, in the order `read_plate` uses them:
- `problems`: `Problem` (one line: file, where, what, fix) and `PlateError`;
- `wells`: well names (`canonical_well`, `well_row_col`) and plate formats; `slugs`: cytokine names as slugs;
- `config`: plate.yaml; `images`: the TIFFs, read, checked and resized one well at a time (`resize`);
- `table`: a per-well CSV as rows of cells; `readouts` (cytokines.csv, range flags), `layout`, `embeddings`;
- `assemble`: `Plate`, `read_plate`, `read_data`, `check_data`; `validate`: the command.

The names below are the package's public surface; callers import them from `cytoops.plate`.
"""

from cytoops.plate.assemble import Plate, check_data, read_data, read_plate
from cytoops.plate.config import DEFAULT_CHANNELS, DEFAULT_PATTERN
from cytoops.plate.images import IMAGE_DTYPES, resize
from cytoops.plate.problems import PlateError, Problem
from cytoops.plate.slugs import SLUG_MAX, slugify
from cytoops.plate.validate import WORKING_SIZE, large_image_note, validate_command
from cytoops.plate.wells import FORMATS, canonical_well, well_row_col

__all__ = [
    "DEFAULT_CHANNELS",
    "DEFAULT_PATTERN",
    "FORMATS",
    "IMAGE_DTYPES",
    "SLUG_MAX",
    "WORKING_SIZE",
    "Plate",
    "PlateError",
    "Problem",
    "canonical_well",
    "check_data",
    "large_image_note",
    "read_data",
    "read_plate",
    "resize",
    "slugify",
    "validate_command",
    "well_row_col",
]
