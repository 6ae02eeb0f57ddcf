from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ["run", "resume", "rewards", "status", "eval", "fetch", "vocab", "sandbox", "cache"]:
        assert name in result.output
