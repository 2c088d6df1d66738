"""Progress bars for the CLI: one :data:`speclake.lake.run.Progress` callable for every command."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from speclake.lake.run import Progress


@contextmanager
def stage_bar(desc: str, stages: list[str] | None = None) -> Iterator[Progress]:
    """A tqdm bar over a run's stages (``stages``: the expected ones; others add to the total).

    A stage counts as done when the next one starts. Within a stage that reports a total (``done``
    of ``total`` shards, epochs ...), the bar's postfix shows its advance.
    """
    from tqdm import tqdm

    expected = list(stages or [])
    seen: list[str] = []
    with tqdm(total=len(expected) or None, desc=desc, unit="stage", file=sys.stderr, leave=False) as bar:
        def note(stage: str, done: int, total: int | None) -> None:
            if stage not in seen:  # a new stage: the one before it is done
                if seen:
                    bar.update(1)
                seen.append(stage)
                if stage not in expected and bar.total is not None:
                    bar.total += 1
                bar.set_postfix_str(stage)
            elif total and done < total:
                bar.set_postfix_str(f"{stage} {done}/{total}")
            bar.refresh()

        yield note
        if seen:
            bar.update(1)
