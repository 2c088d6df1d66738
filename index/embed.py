"""Structure embedders: a registry of name -> class, each with a version string.

An embedder turns standardized SMILES into vectors of one kind:

* ``binary``: packed bits (``uint8[n, dim // 8]``, little-endian bit order as in
  RDKit's FPS text), compared by Tanimoto;
* ``float``: ``float32[n, dim]``, L2-normalized, compared by cosine (inner product).

Learned embedders (the arch5 structure encoder, descriptor vectors) plug in by
subclassing :class:`Embedder` and decorating with :func:`register_embedder`.
"""
from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Sequence

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

_EMBEDDERS: dict[str, type["Embedder"]] = {}

#: Entry-point group of embedders registered by other stages (``pyproject.toml``: name = module that
#: registers it). The index never names those modules: trained-model embedders plug in from outside.
EMBEDDERS_ENTRY_POINTS = "speclake.embedders"


def _plugin_module(name: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=EMBEDDERS_ENTRY_POINTS, name=name):
        return ep.value.split(":")[0]
    return None

class EmbedderUnavailable(ValueError):
    """The named embedder is not registered (or not yet available)."""


class Embedder(ABC):
    """Turns standardized SMILES into fixed-size vectors; one instance loads its model once.

    Learned embedders take ``model`` (a trained model's directory, recorded in the manifest);
    :meth:`resolve_model` picks a default one from the lake an index is built in.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["binary", "float"]]
    metric: ClassVar[Literal["tanimoto", "cosine"]]
    embeds_spectra: ClassVar[bool] = False
    uses_gpu: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False

    def __init__(self, model: str | None = None) -> None:
        if model is not None and not self.needs_model:
            raise EmbedderUnavailable(f"embedding {self.name!r} takes no model (got {model!r})")
        self.model = model

    @classmethod
    def resolve_model(cls, lake_dir: str | None, model: str | None) -> str | None:
        """The model directory to embed with (absolute), from ``model`` or a default in ``lake_dir``."""
        return model

    @property
    @abstractmethod
    def dim(self) -> int:
        """Bits (binary) or floats (float) per vector."""

    @property
    @abstractmethod
    def version(self) -> str:
        """Changes whenever the vectors would change (model weights, parameters, library version)."""

    @property
    def code_size(self) -> int:
        """Bytes per stored vector."""
        return self.dim // 8 if self.kind == "binary" else 4 * self.dim

    @abstractmethod
    def embed_smiles(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(vectors, ok)``: one row per input and a bool mask of rows that could be embedded."""

    def describe(self) -> dict[str, object]:
        """What the manifest records about the embedding (and the model directory of a learned one)."""
        out: dict[str, object] = {"name": self.name, "version": self.version, "kind": self.kind, "dim": self.dim,
                                  "metric": self.metric}
        if self.model is not None:
            out["model"] = self.model
        return out

    def arrow_type(self) -> pa.DataType:
        """Arrow type of one stored vector."""
        if self.kind == "binary":
            return pa.binary(self.code_size)
        return pa.list_(pa.float32(), self.dim)


def register_embedder(cls: type[Embedder]) -> type[Embedder]:
    """Class decorator: register an embedder under its ``name``."""
    existing = _EMBEDDERS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"embedder {cls.name!r} is already registered by {existing.__qualname__}")
    _EMBEDDERS[cls.name] = cls
    return cls


def available_embedders() -> list[str]:
    """Names of the registered embedders."""
    return sorted(_EMBEDDERS)


def embedder_class(name: str) -> type[Embedder]:
    """The registered embedder class ``name`` (plug-in modules imported on first use)."""
    cls = _EMBEDDERS.get(name)
    module = _plugin_module(name) if cls is None else None
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("embedder plug-in module %s not importable: %s", module, exc)
        cls = _EMBEDDERS.get(name)
    if cls is None:
        known = ", ".join(available_embedders())
        raise EmbedderUnavailable(f"unknown embedding {name!r}; available: {known}")
    return cls


def get_embedder(name: str, model: str | None = None) -> Embedder:
    """Instantiate the registered embedder ``name`` (with ``model`` for a learned one), or raise
    :class:`EmbedderUnavailable` saying why."""
    cls = embedder_class(name)
    if cls.needs_model and model is None:
        raise EmbedderUnavailable(f"embedding {name!r} needs a trained model (--embedding-model DIR)")
    return cls(model)


@register_embedder
class MorganFingerprint(Embedder):
    """RDKit Morgan fingerprint, radius 2, 2048 bits (rdFingerprintGenerator), compared by Tanimoto."""

    name = "fingerprint"
    kind = "binary"
    metric = "tanimoto"
    radius = 2
    n_bits = 2048

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        from rdkit import RDLogger, rdBase
        from rdkit.Chem import rdFingerprintGenerator

        RDLogger.DisableLog("rdApp.*")
        self._rdkit_version = rdBase.rdkitVersion
        self._generator = rdFingerprintGenerator.GetMorganGenerator(radius=self.radius, fpSize=self.n_bits)

    @property
    def dim(self) -> int:
        return self.n_bits

    @property
    def version(self) -> str:
        return f"morgan-r{self.radius}-{self.n_bits}-rdkit{self._rdkit_version}"

    def embed_smiles(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from rdkit import Chem

        bits = np.zeros((len(smiles), self.n_bits), dtype=np.uint8)
        ok = np.zeros(len(smiles), dtype=bool)
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if smi else None
            if mol is None:
                continue
            bits[i] = self._generator.GetFingerprintAsNumPy(mol)
            ok[i] = True
        return np.packbits(bits, axis=1, bitorder="little"), ok

    def embed_mols(self, mols: Sequence[object]) -> np.ndarray:
        """Packed fingerprints of RDKit molecules (all must be valid)."""
        bits = np.stack([self._generator.GetFingerprintAsNumPy(m) for m in mols]) if mols else np.zeros(
            (0, self.n_bits), np.uint8)
        return np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")


def vectors_to_arrow(vectors: np.ndarray, embedder: Embedder) -> pa.Array:
    """Pack a vector matrix into an Arrow array of the embedder's type."""
    n = vectors.shape[0]
    if embedder.kind == "binary":
        buf = np.ascontiguousarray(vectors, dtype=np.uint8).tobytes()
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(embedder.code_size), n, [None, pa.py_buffer(buf)])
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, embedder.dim)


def arrow_to_vectors(array: pa.Array | pa.ChunkedArray, kind: str, dim: int) -> np.ndarray:
    """Inverse of :func:`vectors_to_arrow`: an Arrow vector column as a numpy matrix."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    n = len(array)
    if kind == "binary":
        width = dim // 8
        if pa.types.is_fixed_size_binary(array.type):
            data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
            start = array.offset * width
            return data[start:start + n * width].reshape(n, width)
        if array.null_count:
            raise ValueError("vector column has nulls")
        otype = np.int64 if pa.types.is_large_binary(array.type) else np.int32
        offsets = np.frombuffer(array.buffers()[1], dtype=otype)[array.offset:array.offset + n + 1]
        if n and not np.all(np.diff(offsets) == width):
            raise ValueError(f"binary vectors are not all {width} bytes long")
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
        return data[offsets[0]:offsets[0] + n * width].reshape(n, width)
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(n, dim)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalize float vectors (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class EmbedActor:
    """Ray Data actor: loads the embedder (model) once, embeds batches of ``inchikey, smiles`` rows.

    Takes the embedder class (pickled by reference), so a plug-in's module is imported in the worker,
    and the model directory of a learned embedder.
    """

    def __init__(self, embedder_cls: type[Embedder] | str, model: str | None = None) -> None:
        self.embedder = get_embedder(embedder_cls, model) if isinstance(embedder_cls, str) else embedder_cls(model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        smiles = batch.column("smiles").to_pylist()
        vectors, ok = self.embedder.embed_smiles(smiles)
        if self.embedder.kind == "float":
            vectors = normalize_rows(vectors)
        return pa.table(
            {
                "inchikey": batch.column("inchikey"),
                "vector": vectors_to_arrow(vectors, self.embedder),
                "ok": pa.array(ok),
            }
        )
