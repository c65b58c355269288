"""One root error type with narrow, context-carrying subclasses.

Every error the detector raises on purpose is a :class:`DetectorError`. The CLI and the Function
entry map the subclasses to exit codes / failed runs; anything else is a bug and surfaces as one.
Messages never carry secrets: adapters redact URLs before building an error.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error the detector raises deliberately."""


class InputError(DetectorError):
    """Bad input data: a missing file, a missing required column, an unreadable document.

    ``path`` names the file; ``line`` and ``column`` narrow it down when known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = []
        if path is not None:
            where.append(path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UsageError(DetectorError):
    """Options that contradict each other or the configuration (the CLI's exit 2)."""


class ConfigError(DetectorError):
    """A missing or invalid setting; ``setting`` names it."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        self.setting = setting
        super().__init__(f"setting {setting}: {message}" if setting else message)


class SourceError(DetectorError):
    """A data source failed (query error, partial result, unreachable service).

    A failed source must never read as "no findings": the run fails instead.
    ``code`` carries the service's error code when there is one.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(f"{message} (code {code})" if code else message)


class StoreError(DetectorError):
    """The allowlist or run-state store failed."""


class StateNotFoundError(StoreError):
    """A command that only reads state was pointed at state that does not exist (nothing is created).

    ``location`` names the folder (or store) looked for."""

    def __init__(self, message: str, *, location: str) -> None:
        self.location = location
        super().__init__(message)
