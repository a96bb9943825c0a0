"""User-facing errors. The CLI prints them as one line each (no traceback) and exits 1."""

from __future__ import annotations

from dataclasses import dataclass


class AihowError(Exception):
    """An error caused by input or host state, not by a bug: shown as its message alone."""

    exit_code = 1


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One located problem in an input file: ``FILE:LINE:COL: key.path: message``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(AihowError):
    """Every problem found in one config file, reported together."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics = tuple(sorted(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))
