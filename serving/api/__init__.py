"""The HTTP API (``speclake serve``): annotate spectra, look up spectra/compounds/studies, read-only SQL.

:func:`create_app` builds the FastAPI app over a lake; :class:`ApiSettings` holds its limits.
"""
from speclake.serving.api.app import create_app
from speclake.serving.api.service import ApiSettings, LakeService

__all__ = ["ApiSettings", "LakeService", "create_app"]
