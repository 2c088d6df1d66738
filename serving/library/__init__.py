"""Library search of study spectra against the lake's spectra: an inverted fragment index beside the
lake (updated incrementally), identity and analogue search, entropy / cosine / modified cosine scores.

>>> from speclake.serving.library import LibraryIndex
>>> index = LibraryIndex.open("mylake")
>>> index.search(mz, intensities, precursor_mz=301.141, ionmode="positive", mode="analogue", top_k=5)
"""
from speclake.serving.library.index import LibraryIndex, LibraryReport
from speclake.serving.library.search import Hit, Query, search, search_batch
from speclake.serving.library.settings import LibrarySettings

__all__ = ["Hit", "LibraryIndex", "LibraryReport", "LibrarySettings", "Query", "search", "search_batch"]
