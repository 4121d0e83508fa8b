"""Problems found in a plate: one line each (file, where, what, fix), and the error that carries them.

A problem never quotes the content of a binary file (an image, or whatever a link named like one points to):
only its name, its kind and what its header declares.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

KINDS = (  # what a path that is not a regular file is, by its stat mode
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a plate, as one line of text."""

    file: str  # path of the file concerned, as given
    where: str  # "well B03", "row 12 (well C05), column 'IL-6'", "key 'format'", or "" when none
    what: str
    fix: str
    level: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{self.file}: {place}{self.what}; fix: {self.fix}"


class PlateError(ValueError):
    """A plate (or data folder) that cannot be used; `problems` holds errors first, then warnings."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a problem is one line of text)."""
    return " ".join(str(exc).split())


def irregular(path: Path) -> str | None:
    """What `path` is when it is not a regular file ("a character device", "a symbolic link to a named pipe
    (FIFO)", "a broken or looping symbolic link"); None for a regular file or a link to one. Only the file
    system's entry is examined: nothing is opened (reading a device or a pipe could return forever)."""
    link = path.is_symlink()
    try:
        mode = path.stat().st_mode  # follows links
    except OSError as exc:
        return (
            "a broken or looping symbolic link"
            if link
            else f"an entry that cannot be examined ({exc.strerror})"
        )
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in KINDS if test(mode)), "a special file")
    return f"a symbolic link to {kind}" if link else kind


def present(path: Path) -> bool:
    """Whether an entry exists at `path`, a broken link included (Path.exists says False for one)."""
    return path.exists() or path.is_symlink()
