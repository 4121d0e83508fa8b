"""Cytokine names as slugs, safe in file names, MLflow metric keys and model names: TNF-α -> TNF-alpha.

A cytokine name whose slug would pass SLUG_MAX characters gets a shortened one (its start and a hash); the
reader warns about it (readouts).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

SLUG_MAX = 64  # characters: MLflow keys built from a slug stay far under its 250-character limit
GREEK_NAMES = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu "
    "nu xi omicron pi rho sigma tau upsilon phi chi psi omega"
).split()
GREEK = {
    **dict(zip("αβγδεζηθικλμνξοπρστυφχψω", GREEK_NAMES, strict=True)),
    **dict(zip("ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", [n.capitalize() for n in GREEK_NAMES], strict=True)),
    "ς": "sigma",
    "µ": "mu",  # MICRO SIGN, as in "µg/ml"
}


def long_slug(name: str) -> str:
    """The slug before shortening to SLUG_MAX (the reader warns when it is longer)."""
    spelled = "".join(GREEK.get(char, char) for char in str(name))
    plain = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", plain)).strip("_.-")


def slugify(name: str) -> str:
    """A name safe for file names, MLflow metric keys and model names: 'TNF-α' -> 'TNF-alpha',
    'IL-12p40/p70' -> 'IL-12p40_p70', 'Activin A' -> 'Activin_A'. ValueError when nothing usable is left.
    At most SLUG_MAX characters: a longer one keeps its start and ends in '-' and 8 hex digits of a hash of
    the whole name (so two long names that differ only at the end still differ)."""
    slug = long_slug(name)
    if not slug:
        raise ValueError(f"{name!r} has no letter or digit to make a file name of")
    if len(slug) > SLUG_MAX:
        digest = hashlib.sha256(str(name).encode()).hexdigest()[:8]
        slug = slug[: SLUG_MAX - 9].rstrip("_.-") + "-" + digest
    return slug
