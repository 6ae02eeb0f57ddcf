"""`explore`: teach a vision model a target task by exploring the web for it."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from explorer.config import (CPU_PRESET, PRETRAINED_INIT, SANDBOX_PRESET, Config, accepted, apply_overrides,
                             preset_values, shown)
from explorer.errors import CorruptRunState, UserError
from explorer.terminal import plain, visible


class ExploreGroup(TyperGroup):
    """Every command's UserError ends as one line (`fail`); anything else is a bug and keeps
    its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            fail(str(e), getattr(e, "exit_code", 1))


app = typer.Typer(
    cls=ExploreGroup,
    help="Teach a vision model a target task by exploring the web for it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
sandbox_app = typer.Typer(help="The offline sandbox web (a local image search engine).", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect and verify an image cache.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(cache_app, name="cache")

console = Console(stderr=True)

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override any config field: section.field=value (repeatable).",
                 rich_help_panel="Config"),
]


def fail(message: str, code: int = 1) -> None:
    """The user's mistake or an unavailable part: one clear line, no traceback. The message
    often quotes a path, a URL or a name from a file: it is printed as text, not markup."""
    console.print(Text.assemble(("error:", "bold red"), " ", plain(message)), soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def outcome_table(outcomes: dict[str, int], title: str):
    from rich.table import Table

    table = Table("outcome", "count", title=title)
    for name, n in outcomes.items():
        table.add_row(plain(name), str(n))
    return table


def load_config(config_file: Optional[Path], overrides: Optional[list[str]], preset: list[str] = ()) -> Config:
    """The --config file (or the defaults) with the --set overrides, every field checked:
    a bad value ends the command in one line before it has written anything. A `preset`'s
    values go under the file's."""
    try:
        base = apply_overrides(Config(), list(preset))
        cfg = Config.load(config_file, base=base) if config_file else base
    except OSError as e:
        fail(f"cannot read the config file {config_file}: {e.strerror or e}")
    try:
        return apply_overrides(cfg, overrides or [])
    except ValueError as e:
        fail(str(e))


@app.callback()
def main() -> None:
    """Search the web with text concepts, train a model on what comes back with MUG,
    reward the queries whose images look like the target, and ask more of what helped."""


RunDirOption = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (state, logs, checkpoints). Default: runs/TARGET.")]

# `explore run --help` tells the defaults a run gets: the config's (explorer/config.py), the
# sandbox targets' preset where it differs, and what each option accepts (the config's rules)
DEFAULTS = Config()
SANDBOX_VALUES = preset_values(SANDBOX_PRESET)


def default_of(name: str) -> str:
    """The default of config field `name` as `explore run` applies it, for --help."""
    value = shown(DEFAULTS, name)
    sandbox = SANDBOX_VALUES.get(name, value)
    said = value if sandbox == value else f"{value}, sandbox-* targets {sandbox}"
    return f"Default: {said} ({name})."


def preset_help() -> str:
    fields = list(preset_values(CPU_PRESET))
    cpu = ", ".join(f"{name}={value}" for name, value in preset_values(CPU_PRESET).items())
    gpu = ", ".join(f"{name}={shown(DEFAULTS, name)}" for name in fields)
    return (f"Training values sized for: {accepted('run.preset')}. cpu: {cpu}; gpu: the config's "
            f"own, {gpu}; auto: cpu when the run has no GPU. Said at the start; --set changes any. "
            + default_of("run.preset"))


INIT_DEFAULT = (f"Default: {DEFAULTS.model.init}, the model's pretrained encoder on real targets "
                f"({DEFAULTS.model.name}: {PRETRAINED_INIT[DEFAULTS.model.name]}), scratch on sandbox-* ones "
                "(model.init).")


@app.command()
def run(
    target: Annotated[str, typer.Option(help=f"flowers102, food101, oxford-pets, dtd, cifar10, cifar100, folder:PATH, sandbox-flowers, sandbox-vehicles. {default_of('run.target')}", show_default=False)] = DEFAULTS.run.target,
    hours: Annotated[Optional[float], typer.Option(help=f"Wall-clock budget, counted across resumes. {default_of('run.hours')}")] = None,
    run_dir: RunDirOption = None,
    engine: Annotated[Optional[str], typer.Option(help=f"Search engine: {accepted('crawl.engine')} (none: the target's images only). {default_of('crawl.engine')}")] = None,
    policy: Annotated[Optional[str], typer.Option(help=f"Query policy: {accepted('policy.name')} (oracle: sandbox targets only). {default_of('policy.name')}")] = None,
    vocab: Annotated[Optional[str], typer.Option(help=f"Concept vocabulary: {accepted('policy.vocab')} (sandbox: its world's). {default_of('policy.vocab')}")] = None,
    model: Annotated[Optional[str], typer.Option(help=f"Model: {accepted('model.name')} (tiny-64 is CPU-sized). {default_of('model.name')}")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help=f"Start weights: {accepted('model.init')}. {INIT_DEFAULT}")] = None,
    preset: Annotated[Optional[str], typer.Option(help=preset_help())] = None,
    rounds: Annotated[Optional[int], typer.Option(help=f"Stop after this many rounds (0: budget only). {default_of('run.rounds')}")] = None,
    max_images: Annotated[Optional[int], typer.Option(help=f"Stop once this many images are kept (0: no cap). {default_of('run.max_images')}")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help=f"Where target datasets are found. {default_of('run.data_root')}")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from (its values replace these defaults).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars at all: plain log lines.")] = False,
    set_: SetOption = None,
) -> None:
    """Explore the web for a target task. Re-running it on an existing run directory resumes it
    (one that never began its first round starts again, with this command's options).

    Defaults come from the config (explorer/config.py); --config FILE and --set section.field=value
    change any field."""
    from explorer.config import PRESETS, is_sandbox_target
    from explorer.run.preflight import choose_preset
    from explorer.session import RunDir

    rd = RunDir(run_dir or Path("runs") / target.replace(":", "_").replace("/", "_"))
    overrides = list(SANDBOX_PRESET) if is_sandbox_target(target) else []
    overrides += [f"run.target={target}", f"run.run_dir={rd.root}"]
    for name, value in (("run.hours", hours), ("crawl.engine", engine), ("policy.name", policy),
                        ("policy.vocab", vocab), ("model.name", model), ("model.init", init), ("run.preset", preset),
                        ("run.rounds", rounds), ("run.max_images", max_images), ("run.data_root", data_root)):
        if value is not None:
            overrides.append(f"{name}={value}")
    overrides += list(set_ or [])
    # built and checked even when the run exists: a refused command writes nothing; this config
    # is used unless the run has begun its first round (then its saved config wins). The preset's
    # values go under everything the user said (the file too), so that any of them can be changed.
    chosen = choose_preset(load_config(config_file, overrides))
    fresh = load_config(config_file, overrides + [f"run.preset={chosen}"], preset=PRESETS[chosen])
    _run(rd, overrides=set_ or [], hours=hours, quiet=quiet, fresh=fresh)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to continue.")],
    hours: Annotated[Optional[float], typer.Option(help="Change the total budget.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars at all: plain log lines.")] = False,
    set_: SetOption = None,
) -> None:
    """Continue a stopped or killed run from its last consistent state."""
    from explorer.session import RunDir

    rd = RunDir(run_dir)
    if not rd.exists():
        fail(f"{run_dir} is not a run directory (no config.toml)")
    _run(rd, overrides=set_ or [], hours=hours, quiet=quiet)


def _run(rd, overrides: list[str], hours: Optional[float], quiet: bool, fresh: Optional[Config] = None) -> None:
    from explorer.run.assemble import run_exploration
    from explorer.run.progress import library_bars

    overrides = list(overrides) + ([f"run.hours={hours}"] if hours is not None else [])
    try:
        with library_bars(quiet):
            run_exploration(rd, console=console, quiet=quiet, fresh=fresh, overrides=overrides)
    except UserError as e:
        fail(str(e), getattr(e, "exit_code", 1))   # 3: the search engine is unavailable
    except (OSError, ValueError, sqlite3.Error) as e:   # a full disk, a read-only folder
        fail(f"{type(e).__name__}: {e}")


@app.command()
def rewards(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    plot: Annotated[bool, typer.Option("--plot", help="Write reward curves and image grids to RUN_DIR/plots.")] = False,
    top: Annotated[int, typer.Option(help="How many best and worst concepts to show.")] = 10,
    original: Annotated[bool, typer.Option("--original", help="Concept rewards as their own round's encoder scored them, not the latest refresh.")] = False,
) -> None:
    """Print the reward log: per round, and the best and worst concepts."""
    from explorer.run import report
    rd = _existing_run(run_dir)
    if fmt in ("csv", "json"):
        typer.echo(report.export(rd, fmt))
        return
    if fmt != "table":
        fail(f"unknown format {fmt!r}: use table, csv or json")
    out = Console()
    out.print(report.rounds_table(rd.read_rounds()))
    concepts = report.concept_rewards(rd, fresh=not original)
    out.print(report.concepts_table(concepts[:top], f"Best {min(top, len(concepts))} concepts"))
    out.print(report.concepts_table(concepts[::-1][:top], f"Worst {min(top, len(concepts))} concepts"))
    if plot:
        for path in report.plot(rd, rd.cache_dir(rd.load_config())):
            out.print(f"wrote {path}")


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Rounds done, queries, images kept, outcomes, training steps, budget used and left."""
    import json

    from explorer.run import report
    info = report.status(_existing_run(run_dir))
    if as_json:
        typer.echo(json.dumps(info))
        return
    out = Console()
    for key, value in info.items():
        if key == "outcomes":
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        out.print(Text.assemble((key.replace("_", " "), "bold"), ": ", plain(value)), highlight=False)


@app.command("report")
def report_(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write it (default: RUN_DIR/report.html).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the web browser.")] = False,
) -> None:
    """Write the run's report, one self-contained HTML page: curves, concepts, their images,
    outcomes, evaluation, config. A run rewrites RUN_DIR/report.html after every round."""
    import webbrowser

    from explorer.run import html_report

    rd = _existing_run(run_dir)
    try:
        path = html_report.write_report(rd, out)
    except OSError as e:   # an --out folder that cannot be written
        fail(f"cannot write the report: {e}")
    Console().print(Text.assemble("wrote ", plain(path)), highlight=False, soft_wrap=True)
    if open_:
        webbrowser.open(path.resolve().as_uri())


@app.command("export")
def export_(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the shards and _manifest.json.")],
    fmt: Annotated[str, typer.Option("--format", help="webdataset (tar shards) or parquet.")] = "webdataset",
    min_reward: Annotated[Optional[float], typer.Option(
        help="Only images whose reward (the freshest) is at least this; images never scored are left out.")] = None,
    shard_size: Annotated[int, typer.Option(help="Samples per shard.")] = 10_000,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an export already in --out (its shards and manifest; nothing else).")] = False,
) -> None:
    """Write the images the run kept, with caption, concept, query, reward, source URL and
    sha256, as webdataset tar shards or parquet files, to train on elsewhere."""
    from explorer.run import export

    rd = _existing_run(run_dir)
    try:
        summary = export.export_run(rd, out, fmt, min_reward, shard_size, overwrite)
    except OSError as e:   # a full disk, an --out that cannot be written
        fail(f"cannot write the export to {out}: {e}")
    Console().print(plain(export.summary_line(summary)), highlight=False, soft_wrap=True)


def _existing_run(run_dir: Path):
    from explorer.session import RunDir

    rd = RunDir(run_dir)
    if not rd.exists() or not rd.db_path.exists():
        fail(f"{run_dir} is not a run directory with a database (run `explore run` first)")
    return rd


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint to evaluate (default: the latest).")] = None,
    protocol: Annotated[Optional[list[str]], typer.Option(help="linear and/or knn (repeatable; default both).")] = None,
    label_fraction: Annotated[Optional[list[float]], typer.Option(help="Share of train labels, per class (repeatable; default 1.0 and 0.1).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    baseline: Annotated[Optional[Path], typer.Option(
        help="Another run on the same target (e.g. a target-only run, --engine none): its latest "
             "checkpoint is evaluated too, and the table adds INTERN's claim, this run's linear "
             "probe with 10% of labels beside the baseline's with 100%.")] = None,
) -> None:
    """Linear probe and k-NN accuracy on the target, with all labels and with 10%."""
    import json

    from explorer.run.assemble import evaluate_run
    from explorer.model.evaluate import format_table, intern_claim

    rd = _existing_run(run_dir)
    base = _existing_run(baseline) if baseline is not None else None
    protocols = tuple(protocol or ("linear", "knn"))
    fractions = tuple(label_fraction) if label_fraction else None
    try:
        results = evaluate_run(rd, checkpoint, protocols, fractions)
        if base is not None:
            results["baseline"] = evaluate_run(base, None, ("linear",), (1.0,))
            results["baseline"]["run_dir"] = str(baseline)
            results["intern_claim"] = intern_claim(results, results["baseline"])
    except ValueError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(results, default=str))
    else:
        Console().print(format_table(results))


@app.command()
def fetch(
    urls: Annotated[Path, typer.Argument(
        help="URL list: parquet, CSV, TSV or JSONL with a URL and a caption column, or text (one URL a line, or url<TAB>caption).")],
    cache_dir: Annotated[Path, typer.Option(help="Cache directory (images, explore.db, index).")],
    allow: Annotated[Optional[list[str]], typer.Option(
        help="HOST:PORT allowed although not public (a local server); repeatable. Nothing else local is fetched.")] = None,
    list_format: Annotated[str, typer.Option(
        "--format", help="auto (by the file's suffix; text otherwise), txt, csv, tsv, jsonl or parquet.")] = "auto",
    url_col: Annotated[str, typer.Option(help="Column of URLs (tables).")] = "url",
    caption_col: Annotated[Optional[str], typer.Option(
        help="Column of captions (tables; default: caption, where the file has it).")] = None,
    chunk_rows: Annotated[int, typer.Option(
        help="Rows read and fetched at a time: memory follows this, not the list's length.")] = 10_000,
    exclude: Annotated[Optional[str], typer.Option(
        help="A target (flowers102, folder:PATH, sandbox-flowers, ...) whose test images are kept out: "
             "their copies on the web (flipped, cropped, greyed, re-encoded...) end as test_leak, as in explore run.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from.")] = None,
    set_: SetOption = None,
) -> None:
    """Download a list of image URLs into the cache, safely and without duplicates."""
    import asyncio
    import gc
    import json
    import os
    import time

    cfg = load_config(config_file, set_)
    # Before numpy: its OpenBLAS would start a thread per core, spinning on the cores the start-up
    # needs (explorer/crawl/worker_env.py); this process's products are small, one thread each (crawler.py).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if cfg.crawl.pool == "process":
        from explorer.crawl import worker_server
        worker_server.start()  # first: the workers' imports then run while this process does its own

    from explorer.crawl.crawler import Crawler, crawl_chunks, open_cache
    from explorer.crawl.netguard import normalise_allow
    from explorer.crawl.url_lists import open_url_list

    try:
        normalise_allow(allow or [])
        url_list = open_url_list(urls, list_format, url_col, caption_col, chunk_rows)
    except (OSError, ValueError) as e:
        fail(str(e))
    leak = None
    if exclude:
        from explorer.run.assemble import exclusion_index
        leak = exclusion_index(cfg, exclude, cache_dir / "excluded", cache_dir)   # (a UserError: one line)
    cache = open_cache(cache_dir, cfg.crawl)
    try:
        with Crawler.for_cache(cache, cfg.crawl, allow=allow or [], leak_index=leak) as crawler:
            crawler.reconcile_index()
            if cfg.crawl.pool == "ray":
                crawler.fetcher  # starts or joins Ray before the clock starts (the actors start with the crawl)
            gc.freeze()  # start-up's objects live to the end: the crawl's collections and the exit's skip them
            start = time.monotonic()
            tally = asyncio.run(crawl_chunks(crawler, url_list.chunks()))
            elapsed = time.monotonic() - start
    finally:
        cache.close()
    fetched = tally.attempted - tally.done_before
    summary = {"attempted": tally.attempted, "already_done": tally.done_before, "outcomes": tally.outcomes,
               "skipped_rows": url_list.skipped_rows, "skipped": dict(sorted(url_list.skipped.items())),
               "seconds": round(elapsed, 3), "images_per_second": round(fetched / elapsed, 1) if elapsed > 0 else 0.0}
    if json_:
        print(json.dumps(summary))
        return
    Console().print(outcome_table(tally.outcomes, f"{tally.attempted} URLs, {tally.done_before} already done"))
    if url_list.skipped_rows:
        reasons = ", ".join(f"{why}: {n}" for why, n in summary["skipped"].items())
        Console().print(plain(f"{url_list.skipped_rows} rows skipped ({reasons})"), highlight=False)
    Console().print(f"{summary['images_per_second']} URLs/s over {elapsed:.1f} s")


@app.command()
def vocab(
    vocab_spec: Annotated[Optional[str], typer.Option("--vocab", help="imagenet21k, wordnet or file:PATH (default: the config's).")] = None,
    sample: Annotated[int, typer.Option(help="How many concepts to show, drawn at random.")] = 20,
    embed: Annotated[bool, typer.Option("--embed", help="Compute (or read from the cache) the concept embeddings.")] = False,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from.")] = None,
    set_: SetOption = None,
) -> None:
    """Show the concept vocabulary: its size and a sample; with --embed, cache its embeddings."""
    import numpy as np

    from explorer.inputs.vocab import VocabError, concept_embeddings, load_vocab

    cfg = load_config(config_file, set_)
    spec = vocab_spec or cfg.policy.vocab
    try:
        concepts = load_vocab(spec)
    except VocabError as e:
        fail(str(e))
    print(f"{visible(spec)}: {len(concepts)} concepts")
    rng = np.random.default_rng(cfg.run.seed)
    for i in sorted(rng.choice(len(concepts), size=min(max(sample, 0), len(concepts)), replace=False)):
        print(f"  {visible(concepts[i])}")
    if embed:
        emb = concept_embeddings(concepts, cfg.policy.text_model, cfg.policy.embedding_cache)
        print(f"embeddings: {emb.shape[0]} x {emb.shape[1]} ({cfg.policy.text_model}), "
              f"cached in {Path(cfg.policy.embedding_cache).expanduser()}")


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[Optional[int], typer.Option(help="Port on 127.0.0.1 (default: sandbox.port; 0 = any free).")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Fault profile: none, realistic, hostile; throttled, down (searches).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="World seed (default: sandbox.seed).")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from.")] = None,
    set_: SetOption = None,
) -> None:
    """Serve the sandbox web on 127.0.0.1 until interrupted."""
    import asyncio

    from explorer.sandbox import faults
    from explorer.sandbox.server import serve

    options = [f"sandbox.{name}={value}" for name, value in (("port", port), ("profile", profile), ("seed", seed))
               if value is not None]
    cfg = load_config(config_file, [*(set_ or []), *options]).sandbox  # every value checked, as --set's
    try:
        faults.check_profile(cfg.profile)
    except ValueError as e:
        fail(str(e))

    def ready(sandbox) -> None:
        forbidden = ", ".join(f"{h}:{p}" for h, p in sandbox.forbidden.items()) or "none"
        typer.echo(f"sandbox web (seed {cfg.seed}, profile {cfg.profile}) at {sandbox.url}")
        typer.echo(f"  try: {sandbox.url}/search?q=red+rose&max_results=10   stats: {sandbox.url}/stats")
        typer.echo(f"  forbidden listeners: {forbidden}   (Ctrl-C to stop)")

    try:
        asyncio.run(serve(cfg, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        fail(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}")


@cache_app.command("stats")
def cache_stats(
    cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Images, bytes and outcome counts of a cache."""
    import json

    from cache.db import MetaDB
    from cache.index import read_index
    from cache.paths import DB_NAME, INDEX_DIR

    db_path = cache_dir / DB_NAME
    if not db_path.exists():
        fail(f"{cache_dir} is not a cache (no {DB_NAME})")
    with MetaDB(db_path) as db:
        n_images, n_bytes = db.image_stats()
        outcomes = db.outcome_counts()
    indexes = {}
    for path in sorted((cache_dir / INDEX_DIR).glob("*.faiss")):
        indexes[path.stem] = read_index(path).ntotal
    stats = {"images": n_images, "bytes": n_bytes, "attempts": sum(outcomes.values()),
             "outcomes": outcomes, "index_vectors": indexes}
    if json_:
        print(json.dumps(stats))
        return
    Console().print(outcome_table(outcomes, f"{cache_dir}: {n_images} images, {n_bytes / 1e6:.1f} MB"))
    for name, n in indexes.items():
        Console().print(f"index {name}: {n} vectors")


@cache_app.command("verify")
def cache_verify(
    cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")],
    run_dir: Annotated[Optional[Path], typer.Option(
        "--run-dir", help="The run whose database describes this cache (default: CACHE_DIR/explore.db).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Skip re-embedding every image to compare with the index.")] = False,
    repair: Annotated[bool, typer.Option("--repair", help=(
        "First mend what two writers on one database left: lost image rows restored from their files "
        "(else their URLs made retryable), the index made to match; says what it did."))] = False,
) -> None:
    """Check that files, database rows and the FAISS index agree; exit 1 listing every problem."""
    from cache.paths import db_path_for
    from cache.verify import verify
    from explorer.crawl.crawler import CHEAP_EMBEDDING

    if not cache_dir.is_dir():
        fail(f"{cache_dir} is not a directory")
    if run_dir is None and (cache_dir / "config.toml").exists():
        run_dir, cache_dir = cache_dir, _run_cache(cache_dir)
    db_path = run_dir / "explore.db" if run_dir else None
    if run_dir is not None and not db_path.exists():
        fail(f"{run_dir} is not a run directory with a database")
    try:
        if repair:
            _repair(cache_dir, db_path)
        problems = verify(cache_dir, db_path, deep=not quick, embedding=CHEAP_EMBEDDING)
    except sqlite3.DatabaseError as e:
        db = db_path_for(cache_dir, db_path)
        raise CorruptRunState(f"cannot read the database {db} ({e}): restore it from a copy, "
                              f"or salvage it with `sqlite3 {db} .recover`") from e
    for problem in problems:
        typer.echo(visible(problem))
    if problems:
        console.print(Text.assemble((f"{len(problems)} problem(s)", "bold red"), " in ", plain(cache_dir)))
        raise typer.Exit(1)
    console.print(plain(f"{cache_dir}: clean"))


def _run_cache(run_dir: Path) -> Path:
    """The cache of the run in `run_dir`, where a user who typed the run directory means it."""
    from explorer.session import RunDir

    rd = RunDir(run_dir)
    cache_dir = rd.cache_dir(rd.load_config())
    console.print(plain(f"{run_dir} is a run directory: verifying its cache at {cache_dir} with its database"))
    if not cache_dir.is_dir():
        fail(f"the cache of run {run_dir} is missing: no folder {cache_dir}")
    return cache_dir


def _repair(cache_dir: Path, db_path: Optional[Path]) -> None:
    """`cache verify --repair`: mend, as the database's one writer, and say what was done."""
    from cache.db import WriterBusy
    from cache.verify import repair
    from explorer.crawl.crawler import CHEAP_EMBEDDING

    try:
        done = repair(cache_dir, db_path, embedding=CHEAP_EMBEDDING)
    except WriterBusy as e:
        fail(str(e))
    for line in done or ["nothing to repair"]:
        typer.echo(f"repair: {line}")


if __name__ == "__main__":
    app()
