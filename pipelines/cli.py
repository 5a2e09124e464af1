"""`cxr ingest`: run the gated Dagster assets in process with live progress and a summary.

Registered as the `cxr.pipelines: ingest` entry point, so the `warehouse` CLI can offer it without
importing Dagster itself.
"""

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from warehouse.config import Settings
from warehouse.render import print_table
from warehouse.sources import DATASETS


def ingest_command(
    settings: Settings, datasets: list[str] | None, *, allow_shrink: bool = False, workers: int = 1
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    chosen = datasets or list(DATASETS)
    unknown = [d for d in chosen if d not in DATASETS]
    if unknown:
        print(f"cxr ingest: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    _use_repo_instance()
    from .checks import QUALITY_CHECKS
    from .runner import ingest

    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[dataset]:<13}"),
        BarColumn(bar_width=16),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {
            d: progress.add_task("waiting", total=len(QUALITY_CHECKS) + 2, dataset=d) for d in [*chosen, "catalog"]
        }

        def on_event(dataset: str, kind: str, detail: str) -> None:
            task = tasks[dataset]
            if kind in ("start", "step"):
                progress.update(task, description=detail, advance=1 if kind == "step" else 0)
            elif kind == "staged":
                progress.console.print(f"  {dataset}: {detail}")
            elif kind in ("check_failed", "check_warning"):
                colour = "red" if kind == "check_failed" else "yellow"
                progress.console.print(
                    f"  [{colour}]{dataset}: {'FAILED' if kind == 'check_failed' else 'warning'} {detail}[/]"
                )
            elif kind == "published":
                progress.update(task, description="[green]published", completed=len(QUALITY_CHECKS) + 2)
            else:
                progress.update(task, description=f"[red]{kind}: {detail}"[:120], completed=len(QUALITY_CHECKS) + 2)

        runs = ingest(settings, chosen, on_event=on_event, allow_shrink=allow_shrink, workers=workers)
    rows = [
        (
            r.dataset,
            r.rows.get("patients", 0),
            r.rows.get("studies", 0),
            r.rows.get("images", 0),
            r.rows.get("reports", 0),
            r.rows.get("labels", 0),
            r.rows.get("qa_questions", 0),
            r.rejected,
            r.checks_passed,
            len(r.checks_failed),
            _status(r),
        )
        for r in runs
    ]
    print_table(
        [
            "dataset",
            "patients",
            "studies",
            "images",
            "reports",
            "labels",
            "QA pairs",
            "rejected",
            "checks ok",
            "failed",
            "status",
        ],
        rows,
        title="Ingest summary",
        caption=f"{time.perf_counter() - started:.1f}s · catalog {settings.catalog}",
    )
    for run in runs:
        if run.status == "blocked":
            print(
                f"{run.dataset} was NOT published (the previous version stays): failed {', '.join(run.checks_failed)}",
                file=sys.stderr,
            )
        elif run.status == "failed":
            print(f"{run.dataset} failed: {run.error}", file=sys.stderr)
    return 0 if all(r.status == "published" for r in runs) else 1


def _status(run) -> str:
    if run.status == "published":
        return "published" + (f" ({len(run.warnings)} warnings)" if run.warnings else "")
    return run.status.upper()


REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, when running from one: its dagster.yaml is ours


def dagster_home(env: Mapping[str, str] | None = None) -> Path | None:
    """The folder whose dagster.yaml `cxr ingest` uses, or None for an ephemeral instance.

    DAGSTER_HOME when the user set it, else the checkout's own dagster.yaml (beside the package), else None. Never
    the current directory: a dagster.yaml that merely sits there belongs to some other project.
    """
    values = os.environ if env is None else env
    if values.get("DAGSTER_HOME"):
        return Path(values["DAGSTER_HOME"]).expanduser().resolve()
    return REPO_ROOT if (REPO_ROOT / "dagster.yaml").is_file() else None


def _use_repo_instance() -> None:
    """Record runs in the repo's Dagster instance (where `dagster dev` shows them), from whatever folder we run in."""
    home = dagster_home()
    if home is not None:
        os.environ["DAGSTER_HOME"] = str(home)
