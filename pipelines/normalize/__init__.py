"""Value normalization of parsed spectral-library records: pure per-record functions.

One concern per module: :mod:`.errors` (NormalizationError and its reason codes),
:mod:`.adduct` (adduct notation and masses), :mod:`.metadata` (ionmode, MS level,
charge, precursor, collision energy, retention time, ChemOnt), :mod:`.peaks`
(peak cleaning), :mod:`.splash` (SPLASH), :mod:`.structure` (RDKit
standardization), :mod:`.settings` and :mod:`.spectrum` (one record -> one row).
"""
