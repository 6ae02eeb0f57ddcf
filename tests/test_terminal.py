"""Untrusted names on the terminal (concepts, captions, titles, outcomes, paths): shown as
text, never obeyed as Rich markup or terminal escapes, and never a crash."""
from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from explorer.terminal import visible
from tests.run_fixtures import add_named_round, make_run

# Rich markup, terminal escapes (OSC title, SGR, CSI 8-bit), bidi overrides, separators
TOKENS = ["[", "]", "[/]", "[bold]", "[/bold]", "[link=x]", "\\", "\\[", ":smile:", "$x^$",
          "\x1b]0;pwned\x07", "\x1b[31m", "\x1b[2J", "\x9b31m", "\x07", "\x00", "\x7f", "\r", "\n",
          "\t", "\u202e", "\u2066", "\u200b", "\u2028", "\ufeff"]
HOSTILE = st.lists(st.one_of(st.sampled_from(TOKENS), st.characters()), min_size=1, max_size=12) \
    .map("".join)
WIDE = {"COLUMNS": "400"}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hidden_characters(output: str) -> list[str]:
    """Characters a terminal would act on instead of showing (a newline ends a line: allowed)."""
    return [ch for ch in output if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")]


@given(HOSTILE)
def test_visible_keeps_the_text_and_hides_nothing(name):
    shown = visible(name)
    assert hidden_characters(shown) == [] and "\n" not in shown
    if name.isprintable():
        assert shown == name


@FAST
@given(HOSTILE)
def test_rewards_and_status_print_any_name_as_text(name):
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        add_named_round(run, name)
        for args in (["rewards", str(run.root)], ["status", str(run.root)]):
            result = CliRunner().invoke(app, args, env=WIDE)
            assert result.exit_code == 0, (args, result.output, result.exception)
            assert hidden_characters(result.output) == [], args
            assert visible(name).strip() in result.output, (args, result.output)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=HOSTILE)
def test_the_round_line_and_the_run_summary_print_any_concept_as_text(name, capsys, monkeypatch):
    """The progress display's round line (bars and --quiet) and the end-of-run summary, with
    the concept in the tables and in the run directory's name."""
    from explorer.run.assemble import finish
    from explorer.run.progress import RunProgress

    monkeypatch.setenv("COLUMNS", "400")   # the summary's own Console: no folded cells
    report = SimpleNamespace(round=0, queries=1, failed_queries=0, fetched=3, kept=2, seconds=1.0,
                             mean_reward=0.5, knn_acc=None, best=[(name, 0.5)],
                             train={"steps": 3, "loss": 1.0, "images_per_s": 10.0})
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run-[/]-[bold]x")   # a path is printed as text too
        add_named_round(run, name)
        capsys.readouterr()
        RunProgress(Console(width=400), quiet=False).round_done(report)
        RunProgress(Console(width=400), quiet=True).round_done(report)
        parts = SimpleNamespace(target=SimpleNamespace(labelled=False, test=None))
        finish(run, run.load_config(), parts, Console(width=400), stopped=True)
        shown = capsys.readouterr().out
    assert hidden_characters(shown) == [] and f"run directory: {run.root}" in shown
    assert shown.count(visible(name).strip()) >= 4, shown  # two round lines, Rounds and Best concepts
