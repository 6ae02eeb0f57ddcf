"""Views of a run (the HTML report, TensorBoard) hang on `Explorer.after_round`: each gets every
logged round's record, and one that fails is reported while the run and the other views go on."""
from rich.console import Console

from explorer.run.loop import Explorer
from explorer.run.progress import RunProgress


def bare_explorer(observers, console) -> Explorer:
    ex = Explorer.__new__(Explorer)          # no engine, crawler or learner needed for the hook
    ex.after_round = list(observers)
    ex.progress = RunProgress(console, quiet=False)
    return ex


def test_every_observer_gets_the_record_even_after_one_fails():
    seen = []

    def broken(record):
        raise OSError("disk full\x1b[2J")

    console = Console(record=True, width=200)
    ex = bare_explorer([broken, seen.append], console)
    ex.notify_round({"round": 3, "kept": 7})
    ex.notify_round({"round": 4, "kept": 1})
    assert [r["round"] for r in seen] == [3, 4]
    out = console.export_text()
    assert "after round 3" in out and "OSError: disk full" in out and "after round 4" in out
    assert "\x1b[2J" not in out          # the error's text is shown, never obeyed by the terminal
