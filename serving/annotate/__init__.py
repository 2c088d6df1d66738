"""Study annotation: every MS2 scan of a study gets ranked structure candidates with a confidence.

Stages (driver :mod:`.job`, steps in the modules named here):

1. read + clean scans (:mod:`.queries`, ingest's readers and steps); bad scans -> ``annotation_errors``;
2. library search (:mod:`speclake.serving.library`): identity and analogue hits;
3. precursor hypotheses and structure candidates (:mod:`.candidates`): adducts per ion mode,
   neutral masses, candidates from the structure index, formulas ranked by fragmentation trees;
4. ranking (:mod:`.rankers`): registered rankers score each candidate list; a calibrated
   confidence that rank 1 is right;
5. write (:mod:`.tables`): ``annotations`` (+ ``annotation_files`` for resume), one commit per file.

Blind: nothing of a query's structure, formula, name or InChIKey is read as evidence.
"""
