"""`explore fetch` and `explore cache stats` end to end on a loopback server."""
import json

from typer.testing import CliRunner

from cli import app
from tests.crawl_fixtures import image_app, jpeg_bytes, serve

runner = CliRunner()


def test_fetch_twice_downloads_nothing_twice_and_stats_agree(tmp_path):
    files = {f"/{i}.jpg": (jpeg_bytes(320, 240, seed=100 + i), {}) for i in range(6)}
    files["/broken.jpg"] = (jpeg_bytes(320, 240, seed=99)[:500], {})
    app_, hits = image_app(files)
    with serve(app_) as port:
        lines = [f"http://127.0.0.1:{port}{p}\tcaption {p}" for p in files] + [f"http://127.0.0.1:{port}/404.jpg", ""]
        url_file = tmp_path / "urls.txt"
        url_file.write_text("\n".join(lines))
        args = ["fetch", str(url_file), "--cache-dir", str(tmp_path / "cache"), "--allow", f"127.0.0.1:{port}",
                "--json", "--set", "crawl.image_size=64", "--set", "crawl.workers=1"]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        summary = json.loads(first.stdout)
        assert summary["attempted"] == 8 and summary["images_per_second"] > 0
        assert summary["outcomes"] == {"ok": 6, "corrupt": 1, "http_error": 1}
        before = dict(hits)

        second = runner.invoke(app, args)
        assert second.exit_code == 0, second.output
        again = json.loads(second.stdout)
        assert hits == before
        assert again["already_done"] == 8 and again["outcomes"] == {}

    stats = runner.invoke(app, ["cache", "stats", str(tmp_path / "cache"), "--json"])
    assert stats.exit_code == 0, stats.output
    s = json.loads(stats.stdout)
    assert s["images"] == 6 and s["attempts"] == 8 and s["index_vectors"] == {"cheap": 6}
    assert len(list((tmp_path / "cache" / "images").rglob("*.jpg"))) == 6


def test_fetch_refuses_a_bad_allow_entry_in_one_line(tmp_path):
    url_file = tmp_path / "urls.txt"
    url_file.write_text("http://127.0.0.1:1/x.jpg\n")
    result = runner.invoke(app, ["fetch", str(url_file), "--cache-dir", str(tmp_path), "--allow", "nonsense"])
    assert result.exit_code == 1 and "HOST:PORT" in result.output


def test_cache_stats_on_a_non_cache_is_one_line(tmp_path):
    result = runner.invoke(app, ["cache", "stats", str(tmp_path)])
    assert result.exit_code == 1 and "not a cache" in " ".join(result.output.split())
