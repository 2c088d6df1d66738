"""Lake tables of the feature jobs, declared once and registered with :mod:`speclake.lake.schema`.

Conventions (all DuckDB-friendly):

* vectors are ``list<float32>``; the order of a vector's entries is stored once,
  in the table version's settings (``refpanel`` ids, ``pattern_ids``) and in
  the ``patterns`` table (``pattern_index``);
* fingerprints are ``list<int16>`` of **on-bit indices** (sorted, 0-based):
  compact (a Morgan fingerprint of a drug-like molecule has ~40 on-bits, 80 bytes)
  and directly usable in SQL, e.g. Tanimoto of two rows::

      len(list_intersect(a.morgan_on, b.morgan_on))
        / (len(a.morgan_on) + len(b.morgan_on) - len(list_intersect(a.morgan_on, b.morgan_on)))

* every row carries the ``settings_hash`` of the :class:`~.job.FeaturesSettings`
  that made it and the ``features_run_id`` of its run.
"""
from __future__ import annotations

import pyarrow as pa

from speclake.lake.schema import TableSpec, register_table

#: Names of the entries of ``spectrum_features.tree_features``, in order.
TREE_FEATURE_NAMES: tuple[str, ...] = (
    "n_nodes", "n_edges", "depth", "n_leaves", "max_out_degree", "explained_intensity", "score",
    "score_per_node", "mean_abs_ppm", "n_ms_levels",
)

TREE_NODE = pa.struct([
    pa.field("mz", pa.float64()),
    pa.field("formula", pa.string()),       # ion formula, e.g. C7H7+
    pa.field("intensity", pa.float64()),    # relative intensity (0 for a precursor without peak)
    pa.field("ppm_error", pa.float64()),    # observed - theoretical, ppm
    pa.field("ms_level", pa.int8()),        # 2 for MS2 nodes, 3.. for nodes of linked MSn spectra
])

TREE_EDGE = pa.struct([
    pa.field("parent", pa.int32()),         # index into nodes
    pa.field("child", pa.int32()),
    pa.field("loss", pa.string()),          # neutral loss formula, e.g. H2O
    pa.field("score", pa.float64()),
])

FRAGTREES = pa.schema([
    pa.field("spectrum_id", pa.string(), nullable=False),   # the MS2 spectrum (base of an MSn tree)
    pa.field("inchikey", pa.string()),
    pa.field("precursor_formula", pa.string()),             # neutral formula of the compound
    pa.field("adduct", pa.string()),
    pa.field("ion_formula", pa.string()),
    pa.field("nodes", pa.list_(TREE_NODE)),                 # node 0 = precursor ion
    pa.field("edges", pa.list_(TREE_EDGE)),
    pa.field("score", pa.float64()),
    pa.field("explained_intensity", pa.float64()),          # share of the MS2 intensity on tree nodes
    pa.field("n_peaks", pa.int32()),
    pa.field("max_ms_level", pa.int8()),                    # 2, or 3/4.. when MSn spectra were linked in
    pa.field("linked_spectrum_ids", pa.list_(pa.string())), # MS3/MS4 spectra hung into this tree
    pa.field("settings_hash", pa.string(), nullable=False),
    pa.field("features_run_id", pa.string(), nullable=False),
])

PATTERNS = pa.schema([
    pa.field("pattern_id", pa.string(), nullable=False),    # rule:<hash12> | motif:<k>
    pa.field("pattern_index", pa.int32(), nullable=False),  # position in spectrum_features.pattern_overlap
    pa.field("kind", pa.string(), nullable=False),          # rule | motif
    pa.field("name", pa.string(), nullable=False),          # readable: "frag@91.05 -> benzyl"
    pa.field("items", pa.list_(pa.string())),               # spectral items: antecedent / top motif words
    pa.field("item_weights", pa.list_(pa.float32())),       # 1 for rule items, topic probabilities for motifs
    pa.field("substructure", pa.string()),                  # rule consequent (readable name), null for motifs
    pa.field("support", pa.float64()),                      # rules: share of structures with antecedent+consequent
    pa.field("confidence", pa.float64()),
    pa.field("lift", pa.float64()),
    pa.field("n_structures", pa.int64()),                   # rules: structures (transactions) with the whole rule
    pa.field("settings_hash", pa.string(), nullable=False),
    pa.field("features_run_id", pa.string(), nullable=False),
])

SPECTRUM_FEATURES = pa.schema([
    pa.field("spectrum_id", pa.string(), nullable=False),
    pa.field("inchikey", pa.string()),
    pa.field("ionmode", pa.string()),
    pa.field("refsim_cosine", pa.list_(pa.float32())),           # vs. the ionmode's reference panel, panel order
    pa.field("refsim_modified_cosine", pa.list_(pa.float32())),
    pa.field("refsim_entropy", pa.list_(pa.float32())),
    pa.field("pattern_overlap", pa.list_(pa.float32())),         # one entry per pattern (patterns.pattern_index)
    pa.field("spec2vec", pa.list_(pa.float32())),
    pa.field("tree_features", pa.list_(pa.float32())),           # TREE_FEATURE_NAMES
    pa.field("settings_hash", pa.string(), nullable=False),
    pa.field("features_run_id", pa.string(), nullable=False),
])

DESCRIPTORS = pa.schema([
    pa.field("inchikey", pa.string(), nullable=False),
    pa.field("inchikey14", pa.string()),
    pa.field("morgan_on", pa.list_(pa.int16())),            # ECFP on-bits (radius, n_bits in settings)
    pa.field("maccs_on", pa.list_(pa.int16())),             # MACCS keys on-bits (RDKit, 0..166)
    pa.field("substructure_on", pa.list_(pa.int16())),      # indices into substructures.SUBSTRUCTURES
    pa.field("substructures", pa.list_(pa.string())),       # the same, by readable name
    pa.field("chemont_id", pa.string()),
    pa.field("chemont_classes", pa.list_(pa.string())),     # kingdom -> ... -> most specific
    pa.field("settings_hash", pa.string(), nullable=False),
    pa.field("features_run_id", pa.string(), nullable=False),
])

FEATURE_SKIPS = pa.schema([
    pa.field("spectrum_id", pa.string()),                   # null for structure-level skips
    pa.field("inchikey", pa.string()),                      # set for structure-level skips (descriptors)
    pa.field("feature", pa.string(), nullable=False),       # fragtrees | refsim | patterns | spec2vec | descriptors
    pa.field("reason_code", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("settings_hash", pa.string(), nullable=False),
    pa.field("features_run_id", pa.string(), nullable=False),
])

FEATURE_TABLES: dict[str, TableSpec] = {
    "fragtrees": TableSpec(
        "fragtrees", FRAGTREES, key=("spectrum_id", "settings_hash"),
        description="SIRIUS-style fragmentation tree per MS2 spectrum (MS3/MS4 of the same precursor linked in).",
    ),
    "patterns": TableSpec(
        "patterns", PATTERNS, key=("pattern_id", "settings_hash"), mode="replace",
        description="Mined spectral patterns: MESSAR-style rules (spectral items -> substructure) and LDA motifs.",
    ),
    "spectrum_features": TableSpec(
        "spectrum_features", SPECTRUM_FEATURES, key=("spectrum_id", "settings_hash"), mode="replace",
        description="Per spectrum: reference similarities, pattern overlaps, Spec2Vec vector, tree features.",
    ),
    "descriptors": TableSpec(
        "descriptors", DESCRIPTORS, key=("inchikey", "settings_hash"),
        description="Per structure: Morgan/ECFP and MACCS on-bits, substructure keys, ChemOnt classes.",
    ),
    "feature_skips": TableSpec(
        "feature_skips", FEATURE_SKIPS, key=("spectrum_id", "inchikey", "feature", "settings_hash"),
        description="Every spectrum or structure a feature job left out, with the reason.",
    ),
}


def register_feature_tables() -> None:
    """Declare the feature tables in the lake schema registry (idempotent)."""
    for spec in FEATURE_TABLES.values():
        register_table(spec)


register_feature_tables()
