"""The study report: one self-contained HTML page per annotated study (``speclake report``).

:func:`render_study_report` returns the page as a string (the API serves it at
``/studies/{name}/report``); :func:`write_study_report` writes it to a file. Modules: :mod:`.data`
(what is read from the lake), :mod:`.svg` (mirror plot, structure drawing, fragmentation tree),
:mod:`.page` (the page: CSS, table script), :mod:`.cli` (``speclake report``).
"""
from speclake.serving.report.data import ReportSettings, StudyNotFound
from speclake.serving.report.page import render_study_report, write_study_report

__all__ = ["ReportSettings", "StudyNotFound", "render_study_report", "write_study_report"]
