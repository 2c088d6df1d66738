"""The one exception normalization raises for bad data, with a stable reason code.

Every record that cannot be normalized ends in ``quarantine`` with
``reason_code`` (short, stable, for counting and SQL) and ``reason`` (one clear
sentence naming the offending value). The subclasses only fix the code, so
``except NormalizationError`` catches all of them.
"""
from __future__ import annotations

#: Every reason code this package raises, with what it means.
REASON_CODES: dict[str, str] = {
    "missing_precursor": "an MS2+ spectrum has no usable precursor m/z",
    "missing_ms_level": "the MS level could not be determined",
    "unknown_adduct": "the precursor type / adduct text could not be parsed",
    "invalid_structure": "neither SMILES nor InChI gives a valid molecule",
    "no_peaks": "no peaks are left after cleaning",
    "invalid_value": "a metadata value could not be parsed",
}


class NormalizationError(Exception):
    """A record (or one value of it) that cannot be normalized.

    ``reason_code`` is one of :data:`REASON_CODES`; ``str(exc)`` (also
    ``exc.reason``) is one sentence naming the offending value. ``stage`` is the
    quarantine stage the error belongs to (``normalize`` or ``structure``).
    """

    stage = "normalize"

    def __init__(self, reason_code: str, message: str) -> None:
        if reason_code not in REASON_CODES:
            raise ValueError(f"unknown reason_code {reason_code!r}; known codes: {', '.join(sorted(REASON_CODES))}")
        super().__init__(message)
        self.reason_code = reason_code

    @property
    def reason(self) -> str:
        """The one-sentence message."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):  # keeps the error picklable (Spark ships exceptions between processes)
        return (NormalizationError, (self.reason_code, self.reason))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason_code!r}, {self.reason!r})"


class _CodedError(NormalizationError):
    """Base of the subclasses that fix ``reason_code``."""

    code = "invalid_value"

    def __init__(self, message: str) -> None:
        super().__init__(self.code, message)

    def __reduce__(self):
        return (type(self), (self.reason,))


class MissingPrecursorError(_CodedError):
    """An MS2+ spectrum without a usable precursor m/z."""

    code = "missing_precursor"


class MissingMsLevelError(_CodedError):
    """The MS level could not be determined."""

    code = "missing_ms_level"


class UnknownAdductError(_CodedError):
    """Adduct / precursor-type text that cannot be parsed."""

    code = "unknown_adduct"


class InvalidStructureError(_CodedError):
    """Neither SMILES nor InChI gives a valid molecule."""

    code = "invalid_structure"
    stage = "structure"


class NoPeaksError(_CodedError):
    """No peaks left after cleaning."""

    code = "no_peaks"


class InvalidValueError(_CodedError):
    """A metadata value that cannot be parsed."""

    code = "invalid_value"
