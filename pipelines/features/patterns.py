"""Mined spectral patterns: MESSAR-style association rules and MS2LDA-style motifs, with overlap scores.

* **Rules**: each annotated structure (2D InChIKey) is a transaction of the
  spectral items (``frag@91.05``, ``loss@18.01``, from :func:`.prepare.spectrum_items`)
  found in most of its spectra plus its substructures (``sub:benzyl``, from
  :mod:`.substructures`); Spark ML FPGrowth finds frequent itemsets and rules;
  only rules from spectral items to one substructure are kept, with support,
  confidence and lift. One transaction per structure, not per spectrum: the same
  compound measured at ten collision energies is one observation, and near-identical
  spectra cannot blow up the number of frequent itemsets (FPGrowth has no length cap).
* **Motifs**: Spark ML LDA over the same spectral items of every usable spectrum
  (CountVectorizer), each topic a motif described by its top words.
* **Overlap** of a spectrum with a pattern: the weighted share of the pattern's
  items the spectrum has (rules: share of antecedent items; motifs: share of the
  top-word probability mass), as a vector over all patterns.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from .prepare import rows_to_batches

log = logging.getLogger(__name__)

SUB_PREFIX = "sub:"
SPECTRAL_PREFIXES = ("frag@", "loss@")


class PatternSettings(BaseModel):
    """Rule mining and motif settings."""

    model_config = ConfigDict(extra="forbid")

    min_support: float = 0.005          # share of structures (transactions) with the itemset (FPGrowth minSupport)
    min_confidence: float = 0.5
    min_lift: float = 2.0
    max_antecedent: int = 3             # items on the left of a kept rule
    max_item_share: float = 0.5         # items in more transactions than this are dropped (uninformative)
    structure_item_share: float = 0.5   # a structure's transaction: items in at least this share of its spectra
    max_spectral_items: int = 10        # ... at most this many (most frequent first), plus its substructures;
                                        # bounds the itemsets a transaction can hold (FPGrowth has no length cap)
    max_rules: int = 500                # best rules kept (by lift, then confidence)
    max_mining_seconds: int = 300       # FPGrowth is cancelled after this (itemset explosion guard): no rules
    n_motifs: int = 50
    lda_max_iter: int = 20
    lda_min_df: int = 5
    lda_vocab_size: int = 20000
    lda_subsampling: float = 0.1
    motif_top_words: int = 10
    seed: int = 42


def rule_id(antecedent: list[str], consequent: str) -> str:
    """Stable id of a rule from its items."""
    text = "|".join(sorted(antecedent)) + "->" + consequent
    return "rule:" + hashlib.sha1(text.encode()).hexdigest()[:12]


class RuleMiningTimeout(RuntimeError):
    """FPGrowth was cancelled after ``max_mining_seconds``."""


def is_spectral(item: str) -> bool:
    return item.startswith(SPECTRAL_PREFIXES)


def keep_rule(antecedent: list[str], consequent: list[str], settings: PatternSettings) -> bool:
    """A MESSAR rule: spectral items only on the left (at most ``max_antecedent``), one substructure on the right."""
    return (0 < len(antecedent) <= settings.max_antecedent and all(is_spectral(i) for i in antecedent)
            and len(consequent) == 1 and consequent[0].startswith(SUB_PREFIX))


def structure_transactions(spectra: Any, substructures: Any, settings: PatternSettings) -> Any:
    """One transaction per structure from usable annotated spectra (``inchikey``, ``items``) and a
    DataFrame (``inchikey``, ``substructures``): frequent spectral items of its spectra + ``sub:`` items."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    annotated = spectra.where(F.col("inchikey").isNotNull()).select(
        F.substring("inchikey", 1, 14).alias("ik14"), "spectrum_id", "items")
    n = annotated.groupBy("ik14").agg(F.count("*").alias("_n"))
    counts = (annotated.select("ik14", F.explode("items").alias("item")).groupBy("ik14", "item").count()
              .join(n, "ik14").where(F.col("count") >= settings.structure_item_share * F.col("_n")))
    rank = Window.partitionBy("ik14").orderBy(F.col("count").desc(), F.col("item"))
    spectral = (counts.withColumn("_r", F.row_number().over(rank)).where(F.col("_r") <= settings.max_spectral_items)
                .groupBy("ik14").agg(F.collect_list("item").alias("_spectral")))
    subs = (substructures.select(F.substring("inchikey", 1, 14).alias("ik14"),
                                 F.transform("substructures", lambda x: F.concat(F.lit(SUB_PREFIX), x)).alias("_subs"))
            .groupBy("ik14").agg(F.first("_subs").alias("_subs")))
    return spectral.join(subs, "ik14").select(
        "ik14", F.array_distinct(F.concat("_spectral", F.coalesce("_subs", F.array().cast("array<string>"))))
        .alias("items"))


def mine_rules(spark: Any, transactions: Any, settings: PatternSettings) -> list[dict[str, Any]]:
    """FPGrowth over a DataFrame with an array<string> column ``items``; MESSAR rules as dicts, best first."""
    from pyspark.ml.fpm import FPGrowth
    from pyspark.sql import functions as F

    n = transactions.count()
    if n == 0:
        return []
    freq = (transactions.select(F.explode("items").alias("item")).groupBy("item").count()
            .where(F.col("count") > settings.max_item_share * n).collect())
    too_common = [r["item"] for r in freq]
    if too_common:
        log.info("patterns: %d items in more than %.0f%% of transactions dropped: %s", len(too_common),
                 100 * settings.max_item_share, ", ".join(sorted(too_common)[:10]))
        transactions = transactions.withColumn("items", F.array_except("items", F.array(*[F.lit(i) for i in too_common])))
    fp = FPGrowth(itemsCol="items", minSupport=settings.min_support, minConfidence=settings.min_confidence)
    sc = spark.sparkContext
    group = f"speclake-fpgrowth-{id(transactions)}"
    sc.setJobGroup(group, "FPGrowth rule mining", interruptOnCancel=True)
    timer = threading.Timer(settings.max_mining_seconds, sc.cancelJobGroup, args=(group,))
    timer.start()
    try:
        model = fp.fit(transactions.select("items"))
        rules = model.associationRules
        rules = rules.where((F.size("consequent") == 1) & F.col("consequent")[0].startswith(SUB_PREFIX)
                            & (F.size("antecedent") <= settings.max_antecedent) & (F.col("lift") >= settings.min_lift))
        collected = rules.collect()
    except Exception as exc:
        if timer.is_alive():
            raise
        raise RuleMiningTimeout(
            f"FPGrowth ran longer than {settings.max_mining_seconds} s (too many frequent itemsets at "
            f"min_support={settings.min_support}); raise patterns.min_support") from exc
    finally:
        timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)
    out = []
    for r in collected:
        ante, cons = list(r["antecedent"]), list(r["consequent"])
        if not keep_rule(ante, cons, settings):
            continue
        out.append({"antecedent": sorted(ante), "consequent": cons[0][len(SUB_PREFIX):],
                    "support": float(r["support"]), "confidence": float(r["confidence"]), "lift": float(r["lift"]),
                    "n_structures": int(round(float(r["support"]) * n))})
    out.sort(key=lambda d: (-round(d["lift"], 9), -round(d["confidence"], 9), -d["support"], len(d["antecedent"]),
                            d["antecedent"], d["consequent"]))
    return out[: settings.max_rules]


def mine_motifs(spark: Any, documents: Any, settings: PatternSettings) -> list[dict[str, Any]]:
    """Spark ML LDA over a DataFrame with array<string> ``items``; motifs as dicts with top words and weights."""
    from pyspark.ml.clustering import LDA
    from pyspark.ml.feature import CountVectorizer
    from pyspark.sql import functions as F

    docs = documents.select("items").where(F.size("items") > 0)
    cv = CountVectorizer(inputCol="items", outputCol="counts", minDF=float(settings.lda_min_df),
                         vocabSize=settings.lda_vocab_size)
    cv_model = cv.fit(docs)
    vocab = cv_model.vocabulary
    if len(vocab) < 2:
        return []
    counted = cv_model.transform(docs).select("counts").cache()
    try:
        lda = LDA(k=min(settings.n_motifs, len(vocab)), maxIter=settings.lda_max_iter, optimizer="online",
                  subsamplingRate=settings.lda_subsampling, seed=settings.seed, featuresCol="counts")
        model = lda.fit(counted)
        topics = model.describeTopics(settings.motif_top_words).orderBy("topic").collect()
    finally:
        counted.unpersist()
    return [{"motif": int(t["topic"]), "words": [vocab[i] for i in t["termIndices"]],
             "weights": [float(w) for w in t["termWeights"]]} for t in topics]


def pattern_rows(rules: list[dict[str, Any]], motifs: list[dict[str, Any]], *, settings_hash: str,
                 run_id: str) -> list[dict[str, Any]]:
    """Rows of the ``patterns`` table: rules first, then motifs, numbered by ``pattern_index``."""
    rows = []
    for r in rules:
        rows.append({"pattern_id": rule_id(r["antecedent"], r["consequent"]), "kind": "rule",
                     "name": f"{' + '.join(r['antecedent'])} -> {r['consequent']}", "items": r["antecedent"],
                     "item_weights": [1.0] * len(r["antecedent"]), "substructure": r["consequent"],
                     "support": r["support"], "confidence": r["confidence"], "lift": r["lift"],
                     "n_structures": r["n_structures"]})
    for m in motifs:
        rows.append({"pattern_id": f"motif:{m['motif']}", "kind": "motif",
                     "name": f"motif {m['motif']}: {', '.join(m['words'][:3])}", "items": m["words"],
                     "item_weights": m["weights"], "substructure": None, "support": None, "confidence": None,
                     "lift": None, "n_structures": None})
    for i, row in enumerate(rows):
        row.update(pattern_index=i, settings_hash=settings_hash, features_run_id=run_id)
    return rows


class PatternMatrix:
    """Patterns as a (patterns x items) weight matrix, rows summing to 1, for overlap scores."""

    def __init__(self, items: list[list[str]], weights: list[list[float]]) -> None:
        vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        for p, (its, ws) in enumerate(zip(items, weights)):
            w = np.asarray(ws, dtype=np.float64)
            total = w.sum()
            for item, v in zip(its, w):
                rows.append(p)
                cols.append(vocab.setdefault(item, len(vocab)))
                vals.append(v / total if total > 0 else 0.0)
        self.vocab = vocab
        self.n_patterns = len(items)
        self._rows, self._cols, self._vals = (np.asarray(rows, np.int64), np.asarray(cols, np.int64),
                                              np.asarray(vals, np.float64))
        self._by_item: list[list[tuple[int, float]]] = [[] for _ in vocab]
        for r, c, v in zip(self._rows, self._cols, self._vals):
            self._by_item[c].append((int(r), float(v)))

    def overlap(self, items: list[str]) -> np.ndarray:
        """Overlap of one spectrum's items with every pattern."""
        out = np.zeros(self.n_patterns, dtype=np.float64)
        for item in set(items):
            c = self.vocab.get(item)
            if c is not None:
                for r, v in self._by_item[c]:
                    out[r] += v
        return out


@lru_cache(maxsize=2)
def load_pattern_matrix(path: str) -> PatternMatrix:
    """The pattern matrix of a saved ``patterns`` Parquet file or directory (cached per worker process)."""
    table = pq.read_table(path, columns=["pattern_index", "items", "item_weights"]).sort_by("pattern_index")
    return PatternMatrix(table.column("items").to_pylist(), table.column("item_weights").to_pylist())


OVERLAP_OUT = pa.schema([pa.field("spectrum_id", pa.string()), pa.field("pattern_overlap", pa.list_(pa.float32()))])


def overlap_batches(batches: Iterator[pa.RecordBatch], *, patterns_path: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: prepared spectra (``spectrum_id``, ``items``) in, overlap vectors out."""
    matrix = load_pattern_matrix(patterns_path)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for sid, items in zip(batch.column("spectrum_id").to_pylist(), batch.column("items").to_pylist()):
                yield {"spectrum_id": sid, "pattern_overlap": matrix.overlap(items or []).astype(np.float32).tolist()}

    yield from rows_to_batches(rows(), OVERLAP_OUT)
