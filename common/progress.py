"""One rich progress bar over files, for long work at a site (ingest, predict).

Drawn on the given console (stderr in the CLI) when it is a terminal, and removed when done.
A no-op without a console, without work, or when the output goes to a file or pipe (a log,
CI, a SuperNode's output): a bar is for a person watching, and a log keeps one line per event
(so a one-line error stays one line). The label is printed as text, never as rich markup (a
site or folder name may contain brackets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)


@contextmanager
def file_progress(console: Console | None, label: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``: one call per file done."""
    if console is None or total == 0 or not console.is_terminal:
        yield lambda: None
        return
    columns = (
        TextColumn(label, style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("files", total=total)
        yield lambda: progress.advance(task)
