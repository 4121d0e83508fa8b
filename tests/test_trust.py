"""cytoops loads no pickle of its own: the only code it loads is a registered MLflow model (docs/tracking.md,
"Trust: a tracking store is code")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cytoops"
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def unsafe_uses(source: str) -> list[str]:
    """Imports of unpickling modules and calls that switch a safe loader off, in one file's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "read_pickle":
                found.append("read_pickle")
            for kw in node.keywords:
                value = getattr(kw.value, "value", None)
                if (kw.arg, value) in (("allow_pickle", True), ("safe_mode", False)):
                    found.append(f"{kw.arg}={value}")
    return found


def test_the_checker_sees_each_unsafe_form():
    source = "import pickle\nfrom joblib import load\nnp.load(f, allow_pickle=True)\nk(safe_mode=False)\n"
    assert unsafe_uses(source) == ["pickle", "joblib", "allow_pickle=True", "safe_mode=False"]
    assert unsafe_uses("np.load(f)\nkeras.saving.load_model(p, compile=False)\n") == []


def test_cytoops_unpickles_nothing_of_its_own():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if (uses := unsafe_uses(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"unsafe loading in cytoops/: {offenders} (see docs/tracking.md, Trust)"
