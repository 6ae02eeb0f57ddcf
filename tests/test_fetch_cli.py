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


def test_fetch_exclude_keeps_a_target_s_test_images_out_and_nothing_else(tmp_path):
    """`--exclude TARGET`: the web's copies of the target's test images (flipped, greyed,
    re-encoded, cropped...) end as test_leak, as in explore run; its train images and other
    pictures are kept; without --exclude every one of them is kept."""
    import io
    import random

    from explorer.sandbox.repost import repost
    from explorer.sandbox.world import World

    world = World(0)
    tests = [world.target_image("sandbox-flowers", "test", y, 0) for y in range(4)]
    others = [world.target_image("sandbox-flowers", "train", y, 0) for y in range(2)]

    def jpeg(im):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=90)
        return buf.getvalue()

    copies = [repost(im, kind, random.Random(i)) for i, (im, kind) in
              enumerate(zip(tests, ("flip", "grayscale", "jpeg", "resize")))]
    files = {f"/copy{i}.jpg": (jpeg(im), {}) for i, im in enumerate(copies)}
    files.update({f"/other{i}.jpg": (jpeg(im), {}) for i, im in enumerate(others)})
    app_, _ = image_app(files)
    with serve(app_) as port:
        url_file = tmp_path / "urls.txt"
        url_file.write_text("\n".join(f"http://127.0.0.1:{port}{p}" for p in files))
        base = ["fetch", str(url_file), "--allow", f"127.0.0.1:{port}", "--json",
                "--set", "crawl.workers=1", "--set", f"run.data_root={tmp_path / 'data'}"]
        kept_out = runner.invoke(app, base + ["--cache-dir", str(tmp_path / "a"), "--exclude", "sandbox-flowers"])
        assert kept_out.exit_code == 0, kept_out.output
        assert json.loads(kept_out.stdout)["outcomes"] == {"test_leak": 4, "ok": 2}
        assert len(list((tmp_path / "a" / "leak").glob("*.npz"))) == 1   # (the next --exclude reads it back)
        plain_fetch = runner.invoke(app, base + ["--cache-dir", str(tmp_path / "b")])
        assert plain_fetch.exit_code == 0, plain_fetch.output
        assert json.loads(plain_fetch.stdout)["outcomes"] == {"ok": 6}


def test_fetch_exclude_of_a_target_without_a_test_split_is_one_line(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        (loose / f"{i}.jpg").write_bytes(jpeg_bytes(64, 64, seed=i))
    url_file = tmp_path / "urls.txt"
    url_file.write_text("http://127.0.0.1:1/x.jpg\n")
    for spec, said in ((f"folder:{loose}", "no test split"), ("sandbox-nothing", "unknown sandbox target")):
        result = runner.invoke(app, ["fetch", str(url_file), "--cache-dir", str(tmp_path / "c"), "--exclude", spec])
        assert result.exit_code == 1 and said in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
