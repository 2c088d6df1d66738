"""A copy of the sample feature lake with a structure index (lake compounds + tests/data/zinc_moses_400.smi).

Built once per test session and shared by the candidate and evaluation tests (the index build
starts Ray, so it is done once).
"""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ZINC_400 = REPO / "tests" / "data" / "zinc_moses_400.smi"

_BUILT: dict[str, Path] = {}


def indexed_lake(sample_feature_lake, tmp_path_factory) -> Path:
    """Path of the indexed copy (built on first use)."""
    if "lake" not in _BUILT:
        from speclake.index.build import build_index
        from speclake.index.settings import IndexSettings

        src, _ = sample_feature_lake
        dst = tmp_path_factory.mktemp("eval-lake") / "lake"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_staging", "models"))
        build_index([dst, ZINC_400], dst, settings=IndexSettings(num_cpus=2))
        _BUILT["lake"] = dst
    return _BUILT["lake"]
