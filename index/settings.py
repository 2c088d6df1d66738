"""Settings of an index build, validated and saved in the manifest."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IndexSettings(BaseModel):
    """How a structure index is built and searched; unknown keys are refused.

    Saved as JSON in every manifest, so an index always says how it was made.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding: str = Field("fingerprint", description="Embedder name from the registry (index.embed).")
    embedding_model: str | None = Field(
        None, description="Trained model directory (or model id in the lake) of a learned embedder such as arch5 "
                          "(None: the newest registered one).")
    shard_target_size: int = Field(
        250_000, ge=1, description="Structures per mass-range shard when shard edges are first planned."
    )
    flat_max: int = Field(
        100_000, ge=0, description="Shards up to this size are searched exactly only; larger ones also get an ANN index."
    )
    ann: Literal["hnsw", "ivf", "none"] = Field(
        "hnsw", description="ANN index for large shards (binary embeddings: hnsw or none; float: hnsw, ivf (IVF-PQ), none)."
    )
    hnsw_m: int = Field(16, ge=4, description="HNSW neighbours per node.")
    hnsw_ef_construction: int = Field(40, ge=8, description="HNSW candidate list size while building.")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW candidate list size while searching.")
    ivf_nprobe: int = Field(32, ge=1, description="IVF lists visited per query (float embeddings).")
    train_sample: int = Field(100_000, ge=1000, description="Vectors sampled to train IVF quantizers.")
    exact_scan_max: int = Field(
        50_000, ge=0, description="A shard's candidate set up to this size is scored exactly, without the ANN index."
    )
    oversample: int = Field(8, ge=1, description="ANN returns k*oversample candidates before exact re-ranking.")
    batch_size: int = Field(4096, ge=1, description="Records per Ray Data batch.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started for a build (None: all).")
    ray_address: str | None = Field(None, description="Connect to this Ray cluster instead of starting a local one.")
    use_gpu: bool | None = Field(None, description="Use GPUs for embedding and FAISS (None: when present).")
    keep_versions: int = Field(2, ge=1, description="Index versions kept on disk (the current one included).")
