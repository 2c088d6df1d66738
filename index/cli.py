"""``speclake index``: build a structure index, query it."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)


def _index_path(lake: Path | None, name: str | None, index: Path | None) -> Path:
    from speclake.index.search import index_dir

    if index is not None:
        return index
    if lake is None:
        raise click.UsageError("give --lake DIR (with --name) or --index PATH")
    return index_dir(lake, name or "fingerprint")


@click.group("index")
def index_cli() -> None:
    """Structure indexes: sharded FAISS over fingerprints (or learned embeddings) with a DuckDB catalog."""


@index_cli.command("build")
@click.option("--structures", "structures", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Structure source: PubChem SDF (Compound_*.sdf.gz), PubChem CID-SMILES, a SMILES file "
                   "(SMILES<TAB>ID [name], .smi/.smi.gz) or another lake directory. Repeat the option, or list "
                   "several files after it.")
@click.argument("more_structures", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--lake", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Lake directory: the index is written to <lake>/index/<name>/ and the lake's compounds "
                   "are indexed too (see --lake-compounds).")
@click.option("--name", default=None, help="Index name under <lake>/index/ (default: the embedding name).")
@click.option("--embedding", default="fingerprint", show_default=True,
              help="Embedder: 'fingerprint' (Morgan r=2, 2048 bits, Tanimoto); 'arch5' (a trained arch5 model's "
                   "structure encoder: the index can then be queried with spectra); 'descriptors' (an arch1/arch2 "
                   "model's descriptor space: structures as descriptor vectors, spectra as predicted probabilities).")
@click.option("--embedding-model", default=None,
              help="Model directory or model id (in --lake) of a learned embedding (default: the newest fitting one).")
@click.option("--lake-compounds/--no-lake-compounds", default=True, show_default=True,
              help="Also index <lake>/compounds when the lake has them.")
@click.option("--add", is_flag=True,
              help="Keep every structure of the current index and add these sources (only they are read). "
                   "Without --add the index holds exactly the given sources; stored embeddings are reused either way.")
@click.option("--repartition", is_flag=True, help="Plan new mass-range shard edges instead of keeping the current ones.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Target structures per mass-range shard (default 250000).")
@click.option("--flat-max", type=click.IntRange(min=0), default=None,
              help="Shards up to this size are searched exactly only; larger ones get an ANN index (default 100000).")
@click.option("--ann", type=click.Choice(["hnsw", "ivf", "none"]), default=None,
              help="ANN index of large shards (fingerprints: hnsw or none; float embeddings also ivf = IVF-PQ).")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs for the local Ray (default: all).")
@click.option("--ray-address", default=None, help="Run on this Ray cluster (e.g. ray://head:10001) instead of a local Ray.")
@click.option("--settings", "settings_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file of IndexSettings (options given on the command line override it).")
def build_cmd(structures: tuple[Path, ...], more_structures: tuple[Path, ...], lake: Path, name: str | None,
              embedding: str, embedding_model: str | None, lake_compounds: bool, add: bool, repartition: bool, shard_size: int | None,
              flat_max: int | None, ann: str | None, num_cpus: int | None, ray_address: str | None,
              settings_file: Path | None) -> None:
    """Build (or update) the structure index of a lake.

    \b
    speclake index build --structures Compound_*.sdf.gz structures.smi.gz --lake DIR
    """
    from pydantic import ValidationError
    from tqdm import tqdm

    from speclake.index.build import BuildError, build_index
    from speclake.index.embed import EmbedderUnavailable
    from speclake.index.settings import IndexSettings
    from speclake.index.sources import SourceError

    base: dict[str, Any] = json.loads(settings_file.read_text()) if settings_file else {}
    overrides = {"embedding": embedding, "embedding_model": embedding_model, "shard_target_size": shard_size, "flat_max": flat_max, "ann": ann,
                 "num_cpus": num_cpus, "ray_address": ray_address}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = IndexSettings.model_validate(base)
    except ValidationError as exc:
        raise click.ClickException(f"invalid index settings: {exc}") from None
    sources: list[Path] = []
    if lake_compounds and (lake / "compounds").is_dir():
        sources.append(lake)
    sources.extend(structures)
    sources.extend(more_structures)
    if not sources and not add:
        raise click.UsageError("no structures to index: give --structures FILE ... (or a lake with compounds)")
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage == "shards":
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc="shards", unit="shard")
            bar.n = done
            bar.refresh()
        elif done == 0:
            click.echo(f"  {stage} ...", err=True)

    try:
        report = build_index(sources, lake, name=name, settings=settings, add=add, repartition=repartition,
                             progress=progress)
    except (BuildError, SourceError, EmbedderUnavailable, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(f"index {report.index_dir}")
    click.echo(f"  records read      {report.records_read:>12,}")
    click.echo(f"  quarantined       {sum(report.quarantined.values()):>12,}  {report.quarantined or ''}")
    click.echo(f"  structures        {report.structures:>12,}  ({report.duplicates_merged:,} duplicates merged)")
    click.echo(f"  embedded (new)    {report.embedded_new:>12,}  ({report.embeddings_reused:,} reused)")
    click.echo(f"  shards            {report.shards_built:>12,} built, {report.shards_reused} reused")
    click.echo(f"  index bytes       {report.index_bytes:>12,}")
    click.echo(f"  seconds           {report.seconds:>12,.1f}  {json.dumps(report.stage_seconds)}")


@index_cli.command("publish")
@click.option("--lake", required=True, type=click.Path(file_okay=False, path_type=Path), help="Lake directory.")
@click.option("--name", default="fingerprint", show_default=True, help="Index name under <lake>/index/.")
def publish_cmd(lake: Path, name: str) -> None:
    """Make the current version of an index the rows of the lake tables index_structures / index_quarantine.

    Builds do this themselves (waiting for the lake's writer lock); this is for an index whose build was
    interrupted before it, or whose lake tables were replaced since.
    """
    from speclake.index.build import publish_index_tables
    from speclake.index.search import IndexNotFound, read_manifest
    from speclake.index.search import index_dir as _dir

    root = _dir(lake, name)
    try:
        manifest = read_manifest(root)
    except IndexNotFound as exc:
        raise click.ClickException(str(exc)) from None
    if not publish_index_tables(lake, name, root / manifest["version_dir"]):
        raise click.ClickException(f"{lake} is not a speclake lake")
    click.echo(f"index {name} ({manifest['version_dir']}) published to index_structures / index_quarantine")


_COLUMNS = ("rank", "score", "inchikey", "formula", "monoisotopic_mass", "mass_error_ppm", "smiles", "source",
            "record_id", "compound_name")


def _read_batch_file(path: Path) -> tuple[list[float | None], list[str], list[str | None]]:
    masses: list[float | None] = []
    smiles: list[str] = []
    formulas: list[str | None] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if not reader.fieldnames or "smiles" not in reader.fieldnames:
            raise click.ClickException(f"{path}: expected a TSV header with 'smiles' (and optional 'mass', 'formula')")
        for row in reader:
            m = (row.get("mass") or "").strip()
            masses.append(float(m) if m else None)
            smiles.append(row["smiles"].strip())
            formulas.append((row.get("formula") or "").strip() or None)
    return masses, smiles, formulas


@index_cli.command("query")
@click.option("--lake", type=click.Path(file_okay=False, path_type=Path), help="Lake directory holding the index.")
@click.option("--name", default=None, help="Index name under <lake>/index/ (default: fingerprint).")
@click.option("--index", "index_path", type=click.Path(file_okay=False, path_type=Path),
              help="Index directory (instead of --lake/--name).")
@click.option("--mass", type=float, default=None,
              help="Neutral monoisotopic mass (Da) of the unknown; structures within --ppm of it are searched. "
                   "Without it the whole index is searched.")
@click.option("--ppm", type=click.FloatRange(min=0), default=10.0, show_default=True, help="Mass window, ppm.")
@click.option("--smiles", default=None, help="Query structure (standardized as the indexed ones).")
@click.option("--spectrum", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Query spectra (MGF, MSP, MassBank, mzML, ...; every MS2 spectrum is one query): needs an index "
                   "built with a learned embedding (arch5 or descriptors). The mass window is centred on the neutral "
                   "mass from each precursor m/z and adduct ([M+H]+/[M-H]- by ion mode when none) unless --mass is given.")
@click.option("--batch", "batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TSV with a header 'mass<TAB>smiles[<TAB>formula]': many queries at once.")
@click.option("--formula", default=None, help="Only structures of this molecular formula (DuckDB filter).")
@click.option("-k", "k", type=click.IntRange(min=1), default=20, show_default=True, help="Hits per query.")
@click.option("--exact", is_flag=True, help="Score every candidate exactly (no ANN), e.g. to check recall.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write all hit columns to this file (.tsv or .parquet) instead of printing a table.")
def query_cmd(lake: Path | None, name: str | None, index_path: Path | None, mass: float | None, ppm: float,
              smiles: str | None, spectrum: Path | None, batch_file: Path | None, formula: str | None, k: int,
              exact: bool, output: Path | None) -> None:
    """Find the structures most similar to a query within a precursor mass window.

    \b
    speclake index query --lake DIR --mass 286.0841 --ppm 10 --smiles 'CC(=O)Oc1ccccc1C(=O)O' -k 20
    """
    from speclake.index.search import IndexNotFound, SpectrumQueryUnavailable, StructureIndex

    if sum(x is not None for x in (smiles, spectrum, batch_file)) != 1:
        raise click.UsageError("give exactly one of --smiles, --spectrum or --batch")
    try:
        index = StructureIndex.open(_index_path(lake, name, index_path))
    except IndexNotFound as exc:
        raise click.ClickException(str(exc)) from None
    with index:
        try:
            if spectrum is not None:
                table = _spectrum_queries(index, spectrum, mass=mass, ppm=ppm, k=k, formula=formula, exact=exact)
            elif batch_file is not None:
                masses, smiles_list, formulas = _read_batch_file(batch_file)
                table = index.query_batch(masses=masses, ppm=ppm, smiles=smiles_list, k=k, formulas=formulas,
                                          exact=exact)
            else:
                table = index.query(mass=mass, ppm=ppm, smiles=smiles, k=k, formula=formula, exact=exact)
        except SpectrumQueryUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if output is not None:
        if output.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, output)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, output, pacsv.WriteOptions(delimiter="\t"))
        click.echo(f"{table.num_rows} hits written to {output}")
        return
    if table.num_rows == 0:
        click.echo("no structures in the mass window" if mass is not None else "no hits")
        return
    lead = tuple(c for c in ("query", "query_spectrum") if c in table.column_names)
    cols = [c for c in lead + _COLUMNS if c in table.column_names]
    rows = table.select(cols).to_pylist()
    click.echo("\t".join(cols))
    for row in rows:
        click.echo("\t".join(_fmt(row[c]) for c in cols))


def _spectrum_queries(index: Any, path: Path, *, mass: float | None, ppm: float, k: int, formula: str | None,
                      exact: bool) -> Any:
    """Hits for every MS2 spectrum of a file, labelled by the spectrum's name or title (``query_spectrum``)."""
    import pyarrow as pa

    from speclake.pipelines.spectrum_files import neutral_mass_of, read_spectra

    index.check_spectrum_queries()
    read = read_spectra(path)
    for q in read.quarantine:
        click.echo(f"skipped {q['record_locator']}: {q['reason']}", err=True)
    if not read.spectra:
        raise click.ClickException(f"{path}: no usable MS2 spectrum")
    masses = [mass if mass is not None else neutral_mass_of(row) for row in read.spectra]
    table = index.query_batch(masses=masses, ppm=ppm, spectra=read.spectra, k=k,
                              formulas=None if formula is None else [formula] * len(masses), exact=exact)
    labels = [row.get("compound_name") or row.get("title") or row.get("record_locator") for row in read.spectra]
    q = table.column("query").to_numpy()
    return table.append_column("query_spectrum", pa.array([labels[i] for i in q], pa.string()))


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.6g}"
    return str(value)
