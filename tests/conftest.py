import os
from pathlib import Path

import pytest

# No test downloads: the Hugging Face hub (timm weights, text models) answers from the local
# cache or refuses, before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Model tests on a shared 2-core machine: two intra-op threads contend and run ~7x
    slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def stop_at_build(monkeypatch):
    """Call it to stop `explore run` before anything is built: it returns the list the run's
    settled configs are collected in, and the command then ends with one UserError line,
    "stopped by the test"."""
    from explorer.errors import UserError
    from explorer.run import assemble

    def install() -> list:
        seen = []

        def build(run, cfg, *args):
            seen.append(cfg)
            raise UserError("stopped by the test before the first round")

        monkeypatch.setattr(assemble, "build", build)
        return seen

    return install


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure is reported even where CPython 3.11 cannot format it: pytest reads the failing
    statement with `ast.parse`, and 3.11's AST constructor keeps its recursion depth in state
    shared by all threads (CPython gh-106905), so a parse in another thread at the same moment
    (a traceback printed by a thread of the run) raises SystemError, which pytest turns into an
    INTERNALERROR that ends the session and hides the test's name. Formatting is tried again,
    then the failure is reported as its exception and the file:line of each frame."""
    try:
        return (yield)
    except SystemError as e:
        if "recursion depth mismatch" not in str(e):
            raise
    from _pytest.reports import TestReport

    try:
        return TestReport.from_item_and_call(item, call)
    except SystemError:
        pass
    report = TestReport.from_item_and_call(item, _without_excinfo(call))
    frames = [f"  {entry.path}:{entry.lineno + 1}" for entry in call.excinfo.traceback
              if not {"_pytest", "pluggy"} & set(Path(entry.path).parts)]
    report.outcome = "failed"
    report.longrepr = "\n".join([call.excinfo.exconly(), *frames,
                                 "(the source could not be shown: CPython gh-106905)"])
    return report


def _without_excinfo(call):
    from _pytest.runner import CallInfo

    return CallInfo(None, None, start=call.start, stop=call.stop, duration=call.duration,
                    when=call.when, _ispytest=True)
