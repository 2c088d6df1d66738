"""Prefect flows over every stage, their deployments with cron schedules, and `speclake flow`.

:mod:`.ledger` keeps each stage's input fingerprint in the lake (skip-unchanged), :mod:`.stages` runs
the real stage jobs behind it, :mod:`.flows` composes them as Prefect tasks with retries,
:mod:`.deployments` schedules them, :mod:`.cli` is ``speclake flow``. Importing this package does not
import Prefect.
"""
