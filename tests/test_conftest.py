"""The suite's own guard (tests/conftest.py): a failing test is reported by name and message
even where CPython 3.11 cannot parse source to format it."""
import subprocess
import sys
from pathlib import Path

PROBE = '''
import ast


def test_fails_while_the_ast_parser_is_broken(monkeypatch):
    def broken(*args, **kwargs):
        raise SystemError("AST constructor recursion depth mismatch (before=129, after=181)")
    monkeypatch.setattr(ast, "parse", broken)
    assert 1 == 2, "the real failure"


def test_passes():
    pass
'''


def test_a_failure_pytest_cannot_format_is_still_reported(tmp_path):
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_probe.py").write_text(PROBE)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
                          str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text         # tests failed; not 3 (an internal error)
    assert "INTERNALERROR" not in text
    assert "1 failed, 1 passed" in text
    assert "FAILED test_probe.py::test_fails_while_the_ast_parser_is_broken" in text
    assert "AssertionError: the real failure" in text
    line = next(i for i, s in enumerate(PROBE.splitlines(), 1) if "assert 1 == 2" in s)
    assert f"test_probe.py:{line}" in text    # the failing line, without its source
