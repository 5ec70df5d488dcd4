"""Build progress for people: a live step list with elapsed times on a terminal, plain
timestamped lines elsewhere (CI logs). Command output goes to the build log; the line a
command printed last is shown beside the running step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text


class Progress:
    def __init__(self, title: str, console: Console | None = None):
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal:
            self.console.width = max(self.console.width, 160)  # logs: no wrapping mid-line
        self.title = title
        self.interactive = self.console.is_terminal
        self._steps: list[list] = []  # [name, state, seconds, detail]
        self._started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.interactive:
            self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        else:
            self.console.print(f"{self.title}")
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        entry = [name, "running", time.monotonic(), ""]
        self._steps.append(entry)
        if not self.interactive:
            self.console.print(f"  [{self._elapsed():6.1f}s] {name} ...", highlight=False)
        self._refresh()
        try:
            yield
        except BaseException:
            entry[1] = "failed"
            entry[2] = time.monotonic() - entry[2]
            self._refresh()
            raise
        entry[1], entry[2], entry[3] = "done", time.monotonic() - entry[2], ""
        if not self.interactive:
            self.console.print(f"  [{self._elapsed():6.1f}s] {name}: done in {entry[2]:.1f}s", highlight=False)
        self._refresh()

    def detail(self, line: str) -> None:
        """The latest output line of the running step (shown on terminals only)."""
        if self._steps and self._steps[-1][1] == "running":
            self._steps[-1][3] = line.strip()[:100]
            self._refresh()

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _refresh(self) -> None:
        if self._live:
            self._live.update(self._render())

    def _render(self) -> Group:
        title = Text(self.title, style="bold")
        title.append(f"  {self._elapsed():.0f}s", style="dim")
        table = Table.grid(padding=(0, 1))
        for name, state, t, detail in self._steps:
            if state == "running":
                icon = Spinner("dots", style="cyan")
                secs = f"{time.monotonic() - t:.0f}s"
            else:
                icon = Text("✔", style="green") if state == "done" else Text("✘", style="red")
                secs = f"{t:.1f}s"
            label = Text(name)
            if detail:
                label.append(f"  {detail}", style="dim")
            label.truncate(max(20, self.console.width - 14), overflow="ellipsis")
            table.add_row(icon, label, Text(secs, style="dim"))
        return Group(title, table)

