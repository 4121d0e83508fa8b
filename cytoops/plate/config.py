"""plate.yaml: channels, image file pattern and plate format, each with its default."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cytoops.plate.problems import Problem, irregular, one_line, present
from cytoops.plate.wells import FORMATS

DEFAULT_CHANNELS = ("actin", "mito", "nucleus")
DEFAULT_PATTERN = "{well}.tif"
CONFIG_KEYS = ("channels", "image_pattern", "format")


def _pattern_problem(pattern: object) -> str | None:
    """What is wrong with an image_pattern, or None."""
    if not isinstance(pattern, str):
        return f"must be text, not {type(pattern).__name__}"
    if pattern.count("{well}") != 1:
        return f"{pattern!r} must hold {{well}} exactly once"
    if pattern.count("{channel}") > 1 or re.sub(r"\{well\}|\{channel\}", "", pattern).count("{"):
        return f"{pattern!r} may hold only {{well}} and at most one {{channel}}"
    if not pattern.lower().endswith((".tif", ".tiff")):
        return f"{pattern!r} must end with .tif or .tiff"
    return None


def _reason(exc: BaseException) -> str:
    """Why plate.yaml cannot be read, quoting none of it (YAML's own messages quote the offending line)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.YAMLError):
        return (
            f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}" if mark else "not valid YAML"
        )
    return one_line(exc)  # an OSError: its message names the path only


def read_config(path: Path, problems: list[Problem]) -> tuple[tuple[str, ...], str, int | None] | None:
    """(channels, image_pattern, format or None) from plate.yaml with defaults; None when it has errors."""
    file = path / "plate.yaml"
    if not present(file):
        return DEFAULT_CHANNELS, DEFAULT_PATTERN, None
    name = str(file)
    kind = irregular(file)
    if kind:  # a pipe or a device is never opened: reading one may never end
        fix = "put the plate.yaml file itself here, or remove the entry"
        problems.append(Problem(name, "", f"is {kind}, not a regular file", fix))
        return None
    fix = "write valid YAML, e.g. 'channels: [actin, mito, nucleus]' on its own line"
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(Problem(name, "", f"cannot be read ({_reason(exc)})", fix))
        return None
    config = {} if config is None else config
    if not isinstance(config, dict):
        fix = "write 'key: value' lines with the keys channels, image_pattern, format"
        problems.append(Problem(name, "", f"holds a {type(config).__name__}, not keys", fix))
        return None
    before = len(problems)
    for key in config:
        if key not in CONFIG_KEYS:
            fix = f"remove it; the keys are {', '.join(CONFIG_KEYS)}"
            problems.append(Problem(name, f"key {key!r}", "is not a plate.yaml key", fix))
    channels = config.get("channels", list(DEFAULT_CHANNELS))
    names_ok = isinstance(channels, list) and all(isinstance(c, str) and c.strip() for c in channels)
    if not (names_ok and channels and len(set(channels)) == len(channels)):
        what = f"must be a non-empty list of distinct names, not {channels!r}"
        fix = "write e.g. 'channels: [actin, mito, nucleus]'"
        problems.append(Problem(name, "key 'channels'", what, fix))
    pattern = config.get("image_pattern", DEFAULT_PATTERN)
    if _pattern_problem(pattern):
        fix = "write e.g. 'image_pattern: \"{well}.tif\"' or '\"{well}_{channel}.tif\"'"
        problems.append(Problem(name, "key 'image_pattern'", _pattern_problem(pattern), fix))
    fmt = config.get("format")
    if fmt is not None and (type(fmt) is not int or fmt not in FORMATS):
        fix = "write 'format: 96', 'format: 384' or 'format: 1536', or remove it to infer the format"
        problems.append(Problem(name, "key 'format'", f"must be 96, 384 or 1536, not {fmt!r}", fix))
    if len(problems) > before:
        return None
    return tuple(channels), pattern, fmt
