"""The neural architectures (arch1-arch5) and the context that rebuilds one from its saved settings.

A :class:`ModelContext` holds everything needed to build a model and its inputs: the architecture,
its validated settings, the spectrum binning, the descriptor list (and arch2 groups), the feature
block sizes. It is JSON-serialisable and saved beside every model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from torch import nn

from speclake.training.encoding import BinSettings
from speclake.training.models.arch1 import Arch1Settings
from speclake.training.models.arch2 import Arch2FlatSettings, Arch2Settings
from speclake.training.models.arch3 import Arch3Settings
from speclake.training.models.arch4 import Arch4Settings
from speclake.training.models.arch5 import Arch5Settings

Kind = Literal["descriptors", "siamese", "joint"]

ARCH_SETTINGS: dict[str, type[BaseModel]] = {
    "arch1": Arch1Settings,
    "arch2": Arch2Settings,
    "arch2-flat": Arch2FlatSettings,
    "arch3": Arch3Settings,
    "arch4": Arch4Settings,
    "arch5": Arch5Settings,
}
ARCHS: tuple[str, ...] = tuple(ARCH_SETTINGS)
ARCH_KIND: dict[str, Kind] = {
    "arch1": "descriptors", "arch2": "descriptors", "arch2-flat": "descriptors", "arch3": "descriptors",
    "arch4": "siamese", "arch5": "joint",
}

#: Lake inputs each architecture trains on: ``descriptors`` (structure descriptors from ``speclake
#: features``: the targets of arch1-arch3, the Tanimoto targets of arch4), ``features`` (per-spectrum
#: feature blocks, arch3) and ``structures`` (the SMILES of ``compounds``, arch5's graph encoder).
ARCH_INPUTS: dict[str, tuple[str, ...]] = {
    "arch1": ("descriptors",), "arch2": ("descriptors",), "arch2-flat": ("descriptors",),
    "arch3": ("descriptors", "features"), "arch4": ("descriptors",), "arch5": ("structures",),
}


def check_arch(arch: str) -> str:
    if arch not in ARCH_SETTINGS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    return arch


def arch_settings(arch: str, values: dict[str, Any] | None = None) -> BaseModel:
    """Validated settings of ``arch`` (unknown keys are refused)."""
    return ARCH_SETTINGS[check_arch(arch)].model_validate(values or {})


@dataclass
class ModelContext:
    """What builds a model and its inputs; ``to_dict``/``from_dict`` round-trip through JSON."""

    arch: str
    model: dict[str, Any]
    bins: dict[str, Any] = field(default_factory=dict)
    descriptors: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    block_dims: dict[str, int] = field(default_factory=dict)
    pos_weight: list[float] = field(default_factory=list)

    @property
    def kind(self) -> Kind:
        return ARCH_KIND[self.arch]

    @property
    def inputs(self) -> tuple[str, ...]:
        return ARCH_INPUTS[self.arch]

    @property
    def settings(self) -> BaseModel:
        return arch_settings(self.arch, self.model)

    @property
    def bin_settings(self) -> BinSettings:
        return BinSettings.model_validate(self.bins)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelContext":
        return cls(**d)


def build_model(ctx: ModelContext) -> nn.Module:
    """A freshly initialised model of ``ctx.arch``."""
    from speclake.training.models import arch1, arch2, arch3, arch4, arch5

    s = ctx.settings
    n_in = ctx.bin_settings.n_bins
    n_desc = len(ctx.descriptors)
    if ctx.kind == "descriptors" and n_desc == 0:
        raise ValueError(f"{ctx.arch} predicts descriptors but the descriptor list is empty "
                         "(too few training structures? lower descriptors.min_positives)")
    if ctx.arch == "arch1":
        return arch1.build(s, n_in, n_desc)
    if ctx.arch == "arch2":
        if len(ctx.groups) != n_desc:
            raise ValueError("arch2 needs one group per descriptor")
        return arch2.GroupedMultitask(n_in, ctx.groups, s)
    if ctx.arch == "arch2-flat":
        return arch2.FlatMultilabel(n_in, n_desc, s)
    if ctx.arch == "arch3":
        return arch3.BlockModel(ctx.block_dims, n_in, n_desc, s)
    if ctx.arch == "arch4":
        return arch4.SiameseEncoder(n_in, s)
    return arch5.JointEmbedding(n_in, s)
