"""What `cxr ingest` shows: live progress per dataset, then a summary table."""
from __future__ import annotations

import sys
import time


def run_ingest(wh, datasets: list[str] | None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .ingest import ingest_dataset, new_run_id
    from .render import print_table
    from .sources import DATASETS, dataset_info

    chosen = datasets or list(DATASETS)
    unknown = [d for d in chosen if d not in DATASETS]
    if unknown:
        print(f"cxr ingest: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    run_id, results, failures = new_run_id(), [], []
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[dataset]:<12}"), BarColumn(bar_width=20),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        for dataset in chosen:
            steps = 2 + len(dataset_info(dataset).tables) + 1
            task = progress.add_task("reading native files", total=steps, dataset=dataset)

            def say(message: str, task=task) -> None:
                progress.update(task, description=message, advance=1 if message.startswith("staging") else 0)
                if not message.startswith("staging"):
                    progress.console.print(f"  {message}")

            try:
                staged = ingest_dataset(wh.settings, wh.store, dataset, run_id=run_id, say=say)
                progress.update(task, description="[green]published", completed=steps)
                results.append(staged)
            except Exception as e:  # noqa: BLE001 - reported per dataset; others still run
                progress.update(task, description=f"[red]failed: {e}")
                failures.append((dataset, e))
    summary = wh.refresh_catalog()
    rows = [(s.dataset, s.rows.get("patients", 0), s.rows.get("studies", 0), s.rows.get("images", 0),
             s.rows.get("labels", 0), s.rows.get("reports", 0), s.rejected, "published") for s in results]
    rows += [(d, None, None, None, None, None, None, f"FAILED: {e}") for d, e in failures]
    print_table(["dataset", "patients", "studies", "images", "labels", "reports", "rejected", "status"], rows,
                title=f"Ingest run {run_id}",
                caption=f"{time.perf_counter() - started:.1f}s; catalog {summary.path}")
    return 1 if failures else 0
