"""Fixtures of the index tests: one small local Ray, real structures, one built index."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

SHIPPED_SMILES = REPO / "tests" / "data" / "zinc_moses_400.smi"
SHARED_ZINC = SHARED_DATA / "structures" / "zinc_moses_1.9M.smi.gz"
SHARED_HEAD_LINES = 3000


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs for the whole session, shut down at the end."""
    import ray

    from speclake.infra.ray import ensure_ray

    started = ensure_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def shipped_smiles() -> Path:
    """400 real MOSES/ZINC structures shipped with the repository."""
    return SHIPPED_SMILES


@pytest.fixture(scope="session")
def structure_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The shipped file, plus lines 401-3000 of ../shared MOSES when present (a few thousand structures)."""
    files = [SHIPPED_SMILES]
    if SHARED_ZINC.exists():
        out = tmp_path_factory.mktemp("shared") / "zinc_head.smi"
        with gzip.open(SHARED_ZINC, "rt") as fin, open(out, "w") as fout:
            for i, line in enumerate(fin):
                if i >= SHARED_HEAD_LINES:
                    break
                if i >= 400:
                    fout.write(line)
        files.append(out)
    return files


@pytest.fixture(scope="session")
def built_index(ray_local, structure_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index over ``structure_files`` with several shards, the large ones with a binary HNSW index."""
    from speclake.index.build import build_index
    from speclake.index.settings import IndexSettings

    lake = tmp_path_factory.mktemp("lake")
    n = sum(1 for f in structure_files for _ in open(f))
    settings = IndexSettings(shard_target_size=max(100, n // 4), flat_max=max(50, n // 8), exact_scan_max=64,
                             train_sample=1000)
    report = build_index(structure_files, lake, settings=settings)
    assert report.structures > 0
    return lake / "index" / "fingerprint"


def read_smiles(path: Path, n: int | None = None) -> list[tuple[str, str]]:
    """(SMILES, id) pairs of a SMILES file."""
    out = []
    with open(path) as fh:
        for line in fh:
            smi, rid = line.rstrip("\n").split("\t")[:2]
            out.append((smi, rid))
            if n is not None and len(out) >= n:
                break
    return out
