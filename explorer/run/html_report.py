"""A run as one self-contained HTML page: RUN_DIR/report.html (`explore report`, and rewritten
by the run at the end of every round and once more when it ends).

The page loads nothing: curves are inline SVG, images inline JPEG thumbnails (data: URIs), and a
Content-Security-Policy forbids anything else, so it opens offline and a hostile string that
slipped through could neither run nor fetch. Everything from the web, the vocabulary, the
config or a file anyone can edit (concepts, titles, URLs, outcome names, rounds.jsonl,
eval.json) is escaped; only http(s) URLs become links. What it shows is bounded whatever the
run's size: the best concepts' best images, the leaderboard's ends, the last rounds in the
table, thinned curves, cut strings.

Reads the run like `report.py` (the database read-only, rounds.jsonl, budget.json, eval.json,
config.toml); writes the page with `cache.atomic`, so a browser reading it while the run goes
on sees the old page or the new one, never half of either.
"""
from __future__ import annotations

import base64
import datetime
import fcntl
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import tomli_w

from cache.atomic import write_atomic
from cache.db import KeptImage, MetaDB
from explorer.engines.base import search_key
from explorer.run import report
from explorer.session import RunDir
from explorer.terminal import visible

REPORT_NAME = "report.html"
GALLERY_CONCEPTS = 8        # best concepts whose kept images are shown
IMAGES_PER_CONCEPT = 8      # their best images each
THUMB_PX = 96               # longest side of a thumbnail
THUMB_QUALITY = 70          # JPEG quality of a thumbnail
LEADERBOARD_ROWS = 15       # best concepts listed, and as many worst
ROUNDS_IN_TABLE = 50        # the last rounds listed one a row (the curves show them all)
CURVE_POINTS = 400          # at most this many points a curve: a long run is thinned
OUTCOMES_SHOWN = 40         # outcome kinds listed (the attempts table's vocabulary is small)
TEXT_CHARS = 120            # a title, concept or URL shown is cut to this many characters
ROUND_LIST = 12             # rounds named in a leaderboard row before "..."


# ---- reading the run --------------------------------------------------------------------------
@dataclass
class Thumb:
    """One kept image as the gallery shows it."""

    uri: str                  # data:image/jpeg;base64,...
    width: int
    height: int
    title: str
    url: str
    page: str
    reward: float | None


@dataclass
class ReportData:
    """Everything the page shows, read in one go (the rendering reads no file)."""

    run_dir: str
    target: str
    state: str
    hours: float
    spent_s: float
    rounds_limit: int
    rounds: list[dict]
    queries: int
    failed_queries: int
    reasks: int
    images: int
    image_bytes: int
    outcomes: dict[str, int]
    concepts: list[dict]
    concept_rounds: dict[str, list[int]]
    gallery: list[tuple[dict, list[Thumb]]]
    eval: dict | None
    eval_error: str | None
    config_toml: str
    generated: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                           .strftime("%Y-%m-%d %H:%M:%S UTC"))


def read_report_data(run: RunDir, state: str | None = None) -> ReportData:
    """The run as the page shows it. `state` is what the caller knows (the run itself says
    "running"); without it the run's lock and limits tell it."""
    cfg = run.load_config()
    rounds = run.read_rounds()
    spent = report.budget_spent_s(run)
    with MetaDB.reading(run.db_path, what="run database") as db:   # read-only, closed after
        counts = db.query_counts()
        images, image_bytes = db.image_stats()
        outcomes = db.outcome_counts(most_first=True)
        concepts = [c._asdict() for c in db.concept_rewards()]
        shown = concepts[:LEADERBOARD_ROWS] + concepts[LEADERBOARD_ROWS:][-LEADERBOARD_ROWS:]
        concept_rounds = db.concept_rounds(c["concept"] for c in shown)
        gallery = [(c, concept_thumbs(db, run.cache_dir(cfg), c["concept"]))
                   for c in concepts[:GALLERY_CONCEPTS]]
    evaluation, eval_error = read_eval(run)
    if state is None:
        state = run_state(run, cfg, len(rounds), spent, evaluation is not None)
    return ReportData(
        run_dir=str(run.root), target=cfg.run.target, state=state, hours=cfg.run.hours,
        spent_s=spent, rounds_limit=cfg.run.rounds, rounds=rounds, queries=counts.total,
        failed_queries=counts.failed, reasks=counts.reasks, images=images,
        image_bytes=image_bytes, outcomes=outcomes, concepts=concepts,
        concept_rounds=concept_rounds, gallery=gallery, eval=evaluation, eval_error=eval_error,
        config_toml=tomli_w.dumps(cfg.to_dict()))


def run_state(run: RunDir, cfg, rounds_done: int, spent_s: float, evaluated: bool) -> str:
    """Running (another process holds the run's lock), finished (its budget or rounds are
    spent, or it was evaluated at its end) or stopped (resumable)."""
    if lock_held(run):
        return "running"
    if spent_s >= cfg.run.hours * 3600 or (cfg.run.rounds and rounds_done >= cfg.run.rounds) \
            or evaluated:
        return "finished"
    return "stopped (explore resume continues it)"


def lock_held(run: RunDir) -> bool:
    """Whether a process holds the run's lock: a shared lock, tried without waiting and dropped
    at once, is refused while `RunLock` holds its exclusive one."""
    path = run.lock().path
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)   # (closing drops the shared lock, if it was taken)
    return False


def read_eval(run: RunDir) -> tuple[dict | None, str | None]:
    """eval.json (written at the end of a run), or None; a file that cannot be read is said,
    not raised: the rest of the page is still worth having."""
    path = run.root / "eval.json"
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path} could not be read: {e}"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, None


def concept_thumbs(db: MetaDB, cache_dir: Path, concept: str) -> list[Thumb]:
    """The concept's best kept images as thumbnails; one whose file is missing or broken is left out."""
    kept = db.concept_images(concept, IMAGES_PER_CONCEPT)
    pages = source_pages(db, kept)
    thumbs = []
    for image in kept:
        path = Path(image.path)
        made = thumbnail(path if path.is_absolute() else cache_dir / path)
        if made is None:
            continue
        uri, width, height = made
        thumbs.append(Thumb(uri, width, height, image.caption or "", image.url or "",
                            pages.get(image.sha256, ""), image.reward))
    return thumbs


def source_pages(db: MetaDB, images: list[KeptImage]) -> dict[str, str]:
    """The page each image is on, by sha256: the `url` of the search result that gave its URL,
    from the run's stored search results (an image whose results are gone has none)."""
    pages: dict[str, str] = {}
    answers: dict[tuple, list] = {}
    for image in images:
        key = (image.engine, search_key(image.text, image.page or 1, image.backend or ""))
        if key not in answers:
            answers[key] = db.get_search_results(*key) or []
        for result in answers[key]:
            if isinstance(result, dict) and result.get("image") == image.url and result.get("url"):
                pages[image.sha256] = str(result["url"])
                break
    return pages


def thumbnail(path: Path) -> tuple[str, int, int] | None:
    """(data URI of a small JPEG, width, height) of the image file, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.thumbnail((THUMB_PX, THUMB_PX))
            small = im.convert("RGB")
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=THUMB_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), *small.size


# ---- text that is safe in the page --------------------------------------------------------------
def text(value: object, limit: int = TEXT_CHARS) -> str:
    """Untrusted `value` as HTML text: invisible characters written as escapes, cut to `limit`
    characters, markup escaped (quotes too, so it is safe in an attribute)."""
    shown = visible(value)
    if len(shown) > limit:
        shown = shown[:limit - 1] + "\u2026"
    return html.escape(shown, quote=True)


def link(url: str, label: str | None = None) -> str:
    """An http(s) URL as a link that opens apart from the report; any other (javascript:,
    data:, file:, garbage) only as text."""
    shown = text(label if label is not None else url)
    if not is_web_url(url):
        return shown
    return (f'<a href="{html.escape(url, quote=True)}" rel="noopener noreferrer nofollow" '
            f'target="_blank">{shown}</a>')


def is_web_url(url: str) -> bool:
    """An http or https URL with a host and nothing invisible in it."""
    if not isinstance(url, str) or visible(url) != url or any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def number(value: object) -> float | None:
    """A finite number from a record anyone could edit, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: object, spec: str = ".3f", scale: float = 1.0) -> str:
    v = number(value)
    return "-" if v is None else format(v * scale, spec)


def percent(value: object) -> str:
    return "-" if number(value) is None else fmt(value, ".1f", 100) + "%"


# ---- curves as inline SVG -------------------------------------------------------------------
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


def curve(rounds: list[dict], value: Callable[[dict], object]) -> list[tuple[float, float]]:
    """(round, value) of the rounds that have a finite one, thinned to CURVE_POINTS."""
    points = []
    for r in rounds:
        x, y = number(r.get("round")), number(value(r))
        if x is not None and y is not None:
            points.append((x, y))
    return thin(points, CURVE_POINTS)


def thin(points: list, most: int) -> list:
    """At most `most` of `points`, evenly spaced, the last one kept."""
    if len(points) <= most:
        return points
    step = len(points) / (most - 1)
    return [points[int(i * step)] for i in range(most - 1)] + [points[-1]]


def ticks(lo: float, hi: float, most: int = 5, whole: bool = False) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) that span lo..hi, at
    most about `most` of them; `whole`: integer steps only (rounds)."""
    if hi <= lo:
        lo, hi = lo - (abs(lo) * 0.1 or 1), hi + (abs(hi) * 0.1 or 1)
    raw = (hi - lo) / max(most - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if whole:
        step = max(1.0, round(step))
    first = math.floor(lo / step + 1e-9) * step
    count = math.ceil((hi - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]


def tick_label(value: float, step: float) -> str:
    """`value` with as many decimals as the tick step needs."""
    decimals = next((d for d in range(8) if abs(round(step, d) - step) < step * 1e-6), 8)
    return f"{value:.{decimals}f}"


def svg_chart(title: str, series: dict[str, list[tuple[float, float]]], y_label: str) -> str:
    """A line chart of `series` (name -> points) over rounds: an inline <svg>, its legend in
    the caption."""
    series = {name: pts for name, pts in series.items() if pts}
    if not series:
        return f'<figure class="chart"><figcaption>{text(title)}</figcaption><p class="empty">no rounds yet</p></figure>'
    w, h, left, right, top, bottom = 420, 220, 52, 12, 10, 34
    xt = ticks(min(x for p in series.values() for x, _ in p), max(x for p in series.values() for x, _ in p),
               most=6, whole=True)
    yt = ticks(min(y for p in series.values() for _, y in p), max(y for p in series.values() for _, y in p))
    (x0, x1), (y0, y1) = (xt[0], xt[-1]), (yt[0], yt[-1])

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             f'role="img" aria-label="{text(title)}">']
    for y in yt:
        parts.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{w - right}" y2="{py(y):.1f}" class="gridline"/>'
                     f'<text x="{left - 4}" y="{py(y) + 3:.1f}" text-anchor="end">{tick_label(y, yt[1] - yt[0])}</text>')
    for x in xt:
        parts.append(f'<text x="{px(x):.1f}" y="{h - bottom + 14}" text-anchor="middle">{x:.0f}</text>')
    parts.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" class="axis"/>'
                 f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" class="axis"/>'
                 f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">round</text>'
                 f'<text x="12" y="{(top + h - bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(top + h - bottom) / 2})">{text(y_label)}</text>')
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if len(pts) <= 60:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
        legend.append(f'<span style="color:{colour}">\u25ac {text(name)}</span>')
    parts.append("</svg>")
    return (f'<figure class="chart"><figcaption>{text(title)} <span class="legend">{" ".join(legend)}'
            f'</span></figcaption>{"".join(parts)}</figure>')


# ---- the sections -------------------------------------------------------------------------------
def section(id_: str, title: str, body: str) -> str:
    return f'<section id="{id_}"><h2>{text(title)}</h2>{body}</section>'


def table(header: list[str], rows: list[list[str]], words: tuple[int, ...] = (0,)) -> str:
    """An HTML table; `header` is ours, each cell of `rows` already escaped HTML. The columns
    `words` hold text (left-aligned), the others numbers."""
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{"" if i in words else " class=num"}>{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def summary_section(d: ReportData) -> str:
    last = d.rounds[-1] if d.rounds else {}
    limit = f" of {d.rounds_limit}" if d.rounds_limit else ""
    items = [
        ("target", text(d.target)),
        ("status", text(d.state)),
        ("budget used", f"{duration(d.spent_s)} of {duration(d.hours * 3600)}"),
        ("budget left", duration(max(0.0, d.hours * 3600 - d.spent_s))),
        ("rounds done", f"{len(d.rounds)}{limit}"),
        ("queries", f"{d.queries} ({d.failed_queries} failed searches, {d.reasks} re-asks)"),
        ("images kept", f"{d.images} ({d.image_bytes / 1e6:.1f} MB)"),
        ("last k-NN accuracy", percent(last.get("knn_acc"))),
        ("run directory", text(d.run_dir, 400)),
    ]
    rows = "".join(f"<tr><th>{text(k)}</th><td>{v}</td></tr>" for k, v in items)
    return section("summary", "Run", f'<table class="kv">{rows}</table>')


def curves_section(d: ReportData) -> str:
    knn = curve(d.rounds, lambda r: r.get("knn_acc"))
    charts = [
        svg_chart("Mean query reward", {"mean reward": curve(d.rounds, lambda r: r.get("mean_reward"))}, "reward"),
        svg_chart("Target k-NN accuracy", {"k-NN %": [(x, 100 * y) for x, y in knn]}, "%"),
        svg_chart("Training losses", {k: curve(d.rounds, train_value(k))
                                      for k in ("loss", "pixel_loss", "caption_loss")}, "loss"),
    ]
    return section("curves", "Per round", f'<div class="charts">{"".join(charts)}</div>')


def train_value(key: str) -> Callable[[dict], object]:
    """Reads one of a round record's training figures (`train.loss`, ...)."""
    return lambda r: r["train"].get(key) if isinstance(r.get("train"), dict) else None


def leaderboard_section(d: ReportData) -> str:
    if not d.concepts:
        return section("leaderboard", "Concepts", '<p class="empty">no concept scored yet</p>')
    best = d.concepts[:LEADERBOARD_ROWS]
    worst = d.concepts[LEADERBOARD_ROWS:][-LEADERBOARD_ROWS:][::-1]
    body = f"<h3>Best {len(best)} of {len(d.concepts)}</h3>" + concepts_table(best, d.concept_rounds)
    if worst:
        body += f"<h3>Worst {len(worst)}</h3>" + concepts_table(worst, d.concept_rounds)
    return section("leaderboard", "Concepts", body)


def concepts_table(concepts: list[dict], rounds: dict[str, list[int]]) -> str:
    rows = []
    for c in concepts:
        asked = rounds.get(c["concept"], [])
        named = ", ".join(str(r) for r in asked[:ROUND_LIST]) + (", \u2026" if len(asked) > ROUND_LIST else "")
        rows.append([text(c["concept"]), fmt(c["reward"]), str(c["n"]), str(c["kept"] or 0), named,
                     str(c.get("reasks") or 0), fmt(c.get("reask_reward"))])
    return table(["concept", "reward", "queries", "images kept", "rounds asked", "re-asks",
                  "re-ask reward"], rows, words=(0, 4))


def gallery_section(d: ReportData) -> str:
    if not d.gallery:
        return section("gallery", "Best concepts' images", '<p class="empty">no images kept yet</p>')
    blocks = []
    for concept, thumbs in d.gallery:
        figures = "".join(thumb_figure(t) for t in thumbs) or '<p class="empty">no image file readable</p>'
        blocks.append(f'<div class="concept"><h3>{text(concept["concept"])} '
                      f'<span class="muted">reward {fmt(concept["reward"])}, {concept["kept"] or 0} kept</span></h3>'
                      f'<div class="thumbs">{figures}</div></div>')
    note = (f'<p class="muted">the best {IMAGES_PER_CONCEPT} images of each of the best '
            f'{GALLERY_CONCEPTS} concepts (a sample: the run kept {d.images})</p>')
    return section("gallery", "Best concepts' images", note + "".join(blocks))


def thumb_figure(t: Thumb) -> str:
    links = " ".join(part for part in (
        link(t.url, "image") if t.url else "",
        link(t.page, "page") if t.page else "") if part)
    title = text(t.title, 80) if t.title else '<span class="muted">(no title)</span>'
    return (f'<figure class="thumb"><img src="{t.uri}" width="{t.width}" height="{t.height}" '
            f'alt="{text(t.title, 80)}" title="{text(t.url, 300)}">'
            f'<figcaption>{title}<br><span class="muted">{fmt(t.reward)}</span> {links}'
            f'<br><span class="src">{text(host(t.page or t.url), 60)}</span></figcaption></figure>')


def host(url: str) -> str:
    """Where a URL points, for a glance (the whole URL is in its link); the URL itself if it has none."""
    try:
        return urlsplit(url).netloc or url
    except ValueError:
        return url


def queries_section(d: ReportData) -> str:
    chart = svg_chart("Queries per round", {
        "queries": curve(d.rounds, lambda r: r.get("queries")),
        "failed searches": curve(d.rounds, lambda r: r.get("failed_queries")),
    }, "queries")
    kept = svg_chart("Images kept per round", {"kept": curve(d.rounds, lambda r: r.get("kept"))}, "images")
    shown = d.rounds[-ROUNDS_IN_TABLE:][::-1]
    rows = []
    for r in shown:
        train = r.get("train") if isinstance(r.get("train"), dict) else {}
        best = r.get("best") if isinstance(r.get("best"), list) else []
        names = ", ".join(text(b[0] if isinstance(b, list) and b else b, 40) for b in best[:3])
        outcomes = r.get("outcomes") if isinstance(r.get("outcomes"), dict) else {}
        said = ", ".join(f"{text(k, 30)} {text(v, 12)}" for k, v in list(outcomes.items())[:8])
        rows.append([text(r.get("round"), 12), text(r.get("queries", "-"), 12),
                     text(r.get("failed_queries", "-"), 12), text(r.get("fetched", "-"), 12),
                     text(r.get("kept", "-"), 12), fmt(r.get("mean_reward")),
                     fmt(r.get("knn_acc"), ".1f", 100), fmt(train.get("loss"), ".3f"), names, said])
    note = "" if len(d.rounds) <= ROUNDS_IN_TABLE else \
        f'<p class="muted">the last {ROUNDS_IN_TABLE} of {len(d.rounds)} rounds, newest first</p>'
    body = (f'<div class="charts">{chart}{kept}</div>{note}' +
            table(["round", "queries", "failed", "fetched", "kept", "mean reward", "k-NN %", "loss",
                   "best concepts", "outcomes"], rows, words=(8, 9)))
    return section("queries", "Queries per round", body)


def outcomes_section(d: ReportData) -> str:
    total = sum(d.outcomes.values())
    if not total:
        return section("outcomes", "Attempts by outcome", '<p class="empty">no URL attempted yet</p>')
    rows = [[text(name, 60), str(n), f"{100 * n / total:.1f}%"]
            for name, n in list(d.outcomes.items())[:OUTCOMES_SHOWN]]
    rows.append(["<b>all</b>", f"<b>{total}</b>", "100%"])
    return section("outcomes", "Attempts by outcome", table(["outcome", "attempts", "share"], rows))


def eval_section(d: ReportData) -> str:
    if d.eval_error:
        return section("eval", "Evaluation", f'<p class="empty">{text(d.eval_error, 400)}</p>')
    if d.eval is None:
        return section("eval", "Evaluation", '<p class="empty">not evaluated yet: the run writes '
                       'eval.json when it ends (or run <code>explore eval</code>)</p>')
    return section("eval", "Evaluation", eval_table(d.eval))


def eval_table(results: dict) -> str:
    """eval.json's accuracies: one row per protocol, one column per share of labels."""
    n_labels = results.get("n_labels") if isinstance(results.get("n_labels"), dict) else {}
    fractions = sorted(n_labels, key=lambda f: -(number(_float(f)) or 0.0))
    names = {"linear": "linear probe", "knn": f"k-NN (k={text(results.get('k', '?'), 8)})"}
    header = ["protocol"] + [f"{fmt(_float(f), '.0f', 100)}% labels ({visible(n_labels[f])})" for f in fractions]
    rows = []
    for protocol, name in names.items():
        accs = results.get(protocol)
        if isinstance(accs, dict):
            rows.append([name] + [fmt(accs.get(f), ".1f", 100) for f in fractions])
    caption = (f"<p>{text(results.get('target', '?'))}: {text(results.get('n_train', '?'), 12)} train / "
               f"{text(results.get('n_test', '?'), 12)} test images, {text(results.get('classes', '?'), 12)} "
               "classes; accuracy in %</p>")
    return caption + table(header, rows)


def _float(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def test_copies_section(d: ReportData) -> str:
    removed = d.outcomes.get("test_leak", 0)
    body = (f"<p><b>{removed}</b> crawled images were dropped as copies of the target's test images "
            "(outcome <code>test_leak</code>).</p>")
    if d.eval is not None and "test_copies_removed" in d.eval:
        body += f'<p class="muted">at the evaluation: {text(d.eval["test_copies_removed"], 20)}</p>'
    return section("test-copies", "Test copies removed", body)


def config_section(d: ReportData) -> str:
    return section("config", "Config (resolved)", f"<pre>{html.escape(visible_lines(d.config_toml))}</pre>")


def visible_lines(value: str) -> str:
    """`value` with its line breaks kept and every other invisible character written as an escape."""
    return "\n".join(visible(line) for line in value.split("\n"))


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:28px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.kv th{font-weight:600;padding-right:18px}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figure.chart figcaption{font-weight:600}
svg text{font-size:10px;fill:#444}svg .axis{stroke:#888}svg .gridline{stroke:#eee}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}figure.thumb{width:128px;font-size:11px;overflow-wrap:anywhere}
figure.thumb img{display:block;border:1px solid #ddd;max-width:128px;height:auto}
.muted{color:#777}.src{color:#999;font-size:10px}.legend{font-weight:400;font-size:12px;margin-left:8px}.empty{color:#999;font-style:italic}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
"""
# nothing but this page's own styles and inline images: no script, no fetch, no frame
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render(d: ReportData) -> str:
    """The whole page."""
    body = "".join((summary_section(d), curves_section(d), leaderboard_section(d), gallery_section(d),
                    queries_section(d), outcomes_section(d), eval_section(d), test_copies_section(d),
                    config_section(d)))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>explore: {text(d.target)}</title><style>{STYLE}</style></head><body>"
            f'<h1>explore: {text(d.target)} <span class="muted">({text(d.state)})</span></h1>'
            f'<p class="muted">written {d.generated}</p>{body}</body></html>\n')


def html_report(run: RunDir, state: str | None = None) -> str:
    """The run's report page (see the module docstring)."""
    return render(read_report_data(run, state))


def write_report(run: RunDir, out: Path | None = None, state: str | None = None) -> Path:
    """Write the page (to RUN_DIR/report.html unless `out`) in one atomic step; returns where."""
    path = Path(out).expanduser() if out is not None else run.root / REPORT_NAME
    write_atomic(path, html_report(run, state).encode("utf-8"))
    return path


def round_writer(run: RunDir) -> Callable[[dict], None]:
    """The `Explorer.after_round` observer that rewrites RUN_DIR/report.html as each round ends."""

    def write_html_report(record: dict) -> None:
        write_report(run, state=f"running (round {record['round']} done)")

    return write_html_report
