"""Problems found in a plate: one line each (file, where, what, fix), and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass


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
