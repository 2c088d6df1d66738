"""The study report: one self-contained HTML page per annotated study (``speclake report``).

:func:`render_study_report` returns the page as a string (the API serves it at
``/studies/{name}/report``); :func:`write_study_report` writes it to a file.
"""
from speclake.serving.report.page import StudyNotFound, render_study_report, write_study_report

__all__ = ["StudyNotFound", "render_study_report", "write_study_report"]
