"""Learned structure embedders for the structure index (:mod:`speclake.index.embed` plug-ins).

* ``arch5``: the joint embedding of a trained arch5 model. Structures go through its
  message-passing graph encoder f, query spectra through its spectrum encoder g, into one
  cosine space, so ``speclake index query --spectrum FILE`` ranks database structures directly.
* ``descriptors``: a descriptor model (arch1, arch2, arch2-flat; not arch3, whose engineered feature
  blocks a query file does not carry). A structure is its
  descriptor vector in the model's descriptor space (Morgan, MACCS, substructure keys), a query
  spectrum the model's predicted probabilities; cosine compares them (CSI:FingerID-style
  fingerprint retrieval as a nearest-neighbour search).

The model is a registered model directory (``<lake>/models/<model_id>``); building without one
takes the newest registered model of a fitting architecture in the lake. The embedder's version
is the model id, so a retrained model gets new embeddings instead of reusing stale ones.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from speclake.index.embed import Embedder, EmbedderUnavailable, register_embedder

log = logging.getLogger(__name__)


def spectra_table(spectra: Sequence[Any] | pa.Table) -> pa.Table:
    """Query spectra as a table with ``mz`` and ``intensities``: from a table, or from dicts /
    objects with those keys or attributes (lake rows, :func:`~speclake.pipelines.spectrum_files.read_spectra`)."""
    if isinstance(spectra, pa.Table):
        return spectra.select(["mz", "intensities"])
    mzs, ints = [], []
    for i, s in enumerate(spectra):
        get = s.get if isinstance(s, dict) else (lambda key, _s=s: getattr(_s, key, None))
        mz, inten = get("mz"), get("intensities")
        if mz is None or inten is None:
            raise ValueError(f"query spectrum {i} has no mz/intensities (got {type(s).__name__})")
        mzs.append([float(x) for x in mz])
        ints.append([float(x) for x in inten])
    return pa.table({"mz": pa.array(mzs, pa.list_(pa.float64())), "intensities": pa.array(ints, pa.list_(pa.float64()))})


def _newest_model(lake_dir: str | None, archs: Sequence[str], embedding: str) -> str:
    from speclake.lake.catalog import LakeError
    from speclake.training.registry import list_models

    if lake_dir is None:
        raise EmbedderUnavailable(f"embedding {embedding!r} needs a trained model: give its directory")
    try:
        found = [m for m in list_models(lake_dir) if m.get("arch") in archs]
    except LakeError:
        found = []
    if not found:
        raise EmbedderUnavailable(
            f"embedding {embedding!r} needs a trained {'/'.join(archs)} model and {lake_dir} has none: "
            f"run 'speclake train --arch {archs[0]} --lake {lake_dir}' first (or give --embedding-model DIR)")
    return str((Path(lake_dir) / "models" / found[-1]["model_id"]).resolve())


def _model_path(model: str, lake_dir: str | None) -> Path:
    """A model directory from a path, or from a model id in ``lake_dir``."""
    path = Path(model)
    if not (path / "model.json").exists() and lake_dir is not None:
        from speclake.training.registry import model_dir

        path = model_dir(lake_dir, model)
    if not (path / "model.json").exists():
        raise EmbedderUnavailable(f"no trained model at {model!r} (expected a folder with model.json)")
    return path.resolve()


class _ModelEmbedder(Embedder):
    """Shared part: loads the registered model once (GPU where present), version = model id."""

    kind = "float"
    metric = "cosine"
    embeds_spectra = True
    uses_gpu = True
    needs_model = True
    archs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        import torch

        from speclake.training.registry import load_model

        path = _model_path(str(model), None)
        arch = json.loads((path / "model.json").read_text()).get("arch")
        if arch not in self.archs:
            raise EmbedderUnavailable(f"embedding {self.name!r} needs a {'/'.join(self.archs)} model; "
                                      f"{path.name} is {arch}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.loaded = load_model(path.parent.parent, path.name, device=device)

    @classmethod
    def resolve_model(cls, lake_dir: str | None, model: str | None) -> str | None:
        if model is None:
            return _newest_model(lake_dir, cls.archs, cls.name)
        return str(_model_path(model, lake_dir))

    @property
    def version(self) -> str:
        return self.loaded.model_id


@register_embedder
class Arch5Embedder(_ModelEmbedder):
    """arch5 joint embedding: graph encoder f for structures, spectrum encoder g for query spectra."""

    name = "arch5"
    archs = ("arch5",)

    @property
    def dim(self) -> int:
        return int(self.loaded.context.model["embedding_dim"])

    def embed_smiles(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.loaded.embed_structures(list(smiles))
        ok = ~np.isnan(vectors).any(axis=1)
        return np.nan_to_num(vectors, nan=0.0), ok

    def embed_spectra(self, spectra: Sequence[Any] | pa.Table) -> np.ndarray:
        """(n, dim) L2-normalised spectrum embeddings (same space as the structures)."""
        return self.loaded.embed_spectra(spectra_table(spectra))


@register_embedder
class DescriptorEmbedder(_ModelEmbedder):
    """Descriptor vectors: structures by their descriptors, spectra by a model's predicted probabilities."""

    name = "descriptors"
    archs = ("arch1", "arch2", "arch2-flat")

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        from speclake.pipelines.features.descriptors import DescriptorSettings as FingerprintSettings
        from speclake.training.encoding import DescriptorSpace

        self._space = DescriptorSpace(self.loaded.descriptor_names)
        self._fp = FingerprintSettings()

    @property
    def dim(self) -> int:
        return len(self.loaded.descriptor_names)

    def embed_smiles(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from speclake.pipelines.features.descriptors import Descriptors, compute_descriptors

        rows, ok = [], np.zeros(len(smiles), bool)
        for i, smi in enumerate(smiles):
            d = compute_descriptors(smi, self._fp) if smi else None
            if isinstance(d, Descriptors):
                ok[i] = True
                rows.append({"morgan_on": d.morgan_on, "maccs_on": d.maccs_on, "substructure_on": d.substructure_on,
                             "chemont_classes": []})
            else:
                rows.append({"morgan_on": [], "maccs_on": [], "substructure_on": [], "chemont_classes": []})
        return self._space.targets(rows).astype(np.float32), ok

    def embed_spectra(self, spectra: Sequence[Any] | pa.Table) -> np.ndarray:
        """(n, dim) predicted descriptor probabilities (the index L2-normalises query vectors)."""
        return self.loaded.predict_descriptors(spectra_table(spectra))
