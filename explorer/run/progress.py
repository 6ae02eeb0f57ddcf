"""What the terminal shows while a run goes: live bars for the round being crawled (searches,
downloads) and the round being trained (MUG steps, loss), and one line per finished round.
With --quiet: the round lines only, as plain timestamped log lines."""
from __future__ import annotations

import contextlib
import math
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn)
from rich.text import Text

from explorer.terminal import visible


def round_line(report) -> str:
    train = report.train
    knn = f"{100 * report.knn_acc:.1f}%" if report.knn_acc is not None else "-"
    reward = f"{report.mean_reward:.3f}" if not math.isnan(report.mean_reward) else "-"
    best = ", ".join(f"{visible(c)} {r:.2f}" for c, r in report.best[:3]) or "-"
    return (f"round {report.round}: {report.queries} queries ({report.failed_queries} failed), "
            f"{report.fetched} fetched, {report.kept} kept | "
            f"train {train.get('steps', 0)} steps, loss {train.get('loss', math.nan):.3f}, "
            f"{train.get('images_per_s', 0):.0f} img/s | reward {reward} | k-NN {knn} | "
            f"{report.seconds:.0f} s | best: {best}")


class RunProgress:
    """The loop calls these hooks; the training hooks come from the training thread (rich's
    Progress is thread-safe)."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.bars: Progress | None = None
        if not quiet:
            self.bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=console, transient=True)
        self._search = self._download = self._train = None
        self._download_total = 0
        self._fetched_at: tuple[float, int] = (time.monotonic(), 0)

    def __enter__(self) -> "RunProgress":
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.stop()

    def _task(self, old, description: str, total: int):
        if old is not None:
            self.bars.remove_task(old)
        return self.bars.add_task(description, total=total, info="")

    # ---- crawl ------------------------------------------------------------------------------
    def crawl_started(self, round_: int, queries: int) -> None:
        if self.bars is None:
            return
        self._search = self._task(self._search, f"round {round_} searches", queries)
        self._download = self._task(self._download, f"round {round_} downloads", 0)
        self._fetched_at = (time.monotonic(), 0)
        self._download_total = 0

    def searched(self, results: int) -> None:
        if self.bars is not None:
            self.bars.update(self._search, advance=1, info="")   # clears a pause's note
            self._download_total += results
            self.bars.update(self._download, total=self._download_total)

    def fetched(self, attempts: int) -> None:
        if self.bars is None:
            return
        started, done = self._fetched_at
        done += attempts
        self._fetched_at = (started, done)
        rate = done / max(time.monotonic() - started, 1e-6)
        self.bars.update(self._download, advance=attempts, info=f"{rate:.0f} img/s")

    def search_paused(self, engine: str, seconds: float, error: str) -> None:
        """The search engine is down: the crawl waits (training goes on)."""
        line = f"search engine {visible(engine)} unavailable ({visible(error)}): crawl paused {seconds:.0f} s"
        if self.quiet:
            print(time.strftime("%H:%M:%S"), line, flush=True)
        elif self._search is not None:
            self.bars.update(self._search, info=f"engine unavailable: paused {seconds:.0f} s")

    # ---- training (from the training thread) -----------------------------------------------
    def train_started(self, round_: int, steps: int) -> None:
        if self.bars is not None:
            self._train = self._task(self._train, f"round {round_} training", steps)

    def trained_step(self) -> None:
        if self.bars is not None and self._train is not None:
            self.bars.advance(self._train)

    # ---- a finished round -----------------------------------------------------------------
    def round_done(self, report) -> None:
        line = round_line(report)
        if self.quiet:
            print(time.strftime("%H:%M:%S"), line, flush=True)
        else:
            self.console.print(Text(line), highlight=False)  # concepts are text, not markup

    def warn(self, line: str) -> None:
        """Something went wrong beside the run (it goes on); the line is already made visible."""
        if self.quiet:
            print(time.strftime("%H:%M:%S"), "warning:", line, flush=True)
        else:
            self.console.print(Text(f"warning: {line}", style="yellow"), highlight=False)


@contextlib.contextmanager
def library_bars(quiet: bool):
    """With --quiet the libraries draw no bar either (Hugging Face's downloads of weights);
    their setting is put back after."""
    try:
        from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                           enable_progress_bars)
    except ImportError:
        yield
        return
    was_off = are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and not was_off:
            enable_progress_bars()
