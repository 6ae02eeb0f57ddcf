"""What the terminal shows while a run goes: one line per finished round (rich, or plain
log lines with --quiet)."""
from __future__ import annotations

import math
import time

from rich.console import Console


class RoundPrinter:
    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet

    def __call__(self, report) -> None:
        train = report.train
        knn = f"{100 * report.knn_acc:.1f}%" if report.knn_acc is not None else "-"
        reward = f"{report.mean_reward:.3f}" if not math.isnan(report.mean_reward) else "-"
        best = ", ".join(f"{c} {r:.2f}" for c, r in report.best[:3]) or "-"
        line = (f"round {report.round}: {report.queries} queries ({report.failed_queries} failed), "
                f"{report.fetched} fetched, {report.kept} kept | "
                f"train {train.get('steps', 0)} steps, loss {train.get('loss', math.nan):.3f}, "
                f"{train.get('images_per_s', 0):.0f} img/s | reward {reward} | k-NN {knn} | "
                f"{report.seconds:.0f} s | best: {best}")
        if self.quiet:
            print(time.strftime("%H:%M:%S"), line, flush=True)
        else:
            self.console.print(line, highlight=False)
