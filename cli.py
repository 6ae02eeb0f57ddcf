"""`explore`: teach a vision model a target task by exploring the web for it."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from explorer.config import Config, apply_overrides

app = typer.Typer(
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
    """The user's mistake or an unavailable part: one clear line, no traceback."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def not_built(what: str) -> None:
    console.print(f"[yellow]{what} is not built yet[/] (see the open issues); nothing was done.")
    raise typer.Exit(2)


def load_config(config_file: Optional[Path], overrides: Optional[list[str]]) -> Config:
    try:
        cfg = Config.load(config_file) if config_file else Config()
        return apply_overrides(cfg, overrides or [])
    except (OSError, ValueError) as e:
        fail(str(e))


@app.callback()
def main() -> None:
    """Search the web with text concepts, train a model on what comes back with MUG,
    reward the queries whose images look like the target, and ask more of what helped."""


@app.command()
def run(
    target: Annotated[str, typer.Option(help="flowers102, food101, ..., folder:PATH, sandbox-flowers")] = "sandbox-flowers",
    hours: Annotated[float, typer.Option(help="Wall-clock budget, counted across resumes.")] = 30.0,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run directory (state, logs, checkpoints).")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from.")] = None,
    set_: SetOption = None,
) -> None:
    """Explore the web for a target task (or resume the run in RUN_DIR)."""
    load_config(config_file, set_)
    not_built("explore run")


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(help="Run directory to continue.")]) -> None:
    """Continue a stopped or killed run from its last consistent state."""
    not_built("explore resume")


@app.command()
def rewards(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Print the reward log: per round, and the best and worst concepts."""
    not_built("explore rewards")


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Rounds done, queries, images kept, outcomes, budget used and left."""
    not_built("explore status")


@app.command("eval")
def eval_(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Linear probe and k-NN accuracy on the target, with all labels and with 10%."""
    not_built("explore eval")


@app.command()
def fetch(
    urls: Annotated[Path, typer.Argument(help="File of URLs, one a line (or url<TAB>caption).")],
    cache_dir: Annotated[Path, typer.Option(help="Cache directory (images, explore.db, index).")],
    allow: Annotated[Optional[list[str]], typer.Option(
        help="HOST:PORT allowed although not public (a local server); repeatable. Nothing else local is fetched.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A config.toml to start from.")] = None,
    set_: SetOption = None,
) -> None:
    """Download a list of image URLs into the cache, safely and without duplicates."""
    import asyncio
    import json
    import time

    from explorer.crawl import Crawler, open_cache, outcome_summary, read_url_list
    from explorer.netguard import normalise_allow

    cfg = load_config(config_file, set_)
    try:
        normalise_allow(allow or [])
        items = read_url_list(urls)
    except (OSError, ValueError) as e:
        fail(str(e))
    cache = open_cache(cache_dir, cfg.crawl)
    try:
        with Crawler.for_cache(cache, cfg.crawl, allow=allow or []) as crawler:
            crawler.reconcile_index()
            start = time.monotonic()
            attempts = asyncio.run(crawler.crawl(items))
            elapsed = time.monotonic() - start
    finally:
        cache.close()
    done_before = sum(a.recorded_before for a in attempts)
    outcomes = outcome_summary(attempts)
    fetched = len(attempts) - done_before
    summary = {"attempted": len(attempts), "already_done": done_before, "outcomes": outcomes,
               "seconds": round(elapsed, 3), "images_per_second": round(fetched / elapsed, 1) if elapsed > 0 else 0.0}
    if json_:
        print(json.dumps(summary))
        return
    from rich.table import Table

    table = Table("outcome", "count", title=f"{len(attempts)} URLs, {done_before} already done")
    for name, n in outcomes.items():
        table.add_row(name, str(n))
    Console().print(table)
    Console().print(f"{summary['images_per_second']} URLs/s over {elapsed:.1f} s")


@app.command()
def vocab() -> None:
    """Show the concept vocabulary: its size and a sample."""
    not_built("explore vocab")


@sandbox_app.command("serve")
def sandbox_serve() -> None:
    """Serve the sandbox web on 127.0.0.1 until interrupted."""
    not_built("explore sandbox serve")


@cache_app.command("stats")
def cache_stats(
    cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Images, bytes and outcome counts of a cache."""
    import json

    from cache.db import MetaDB

    db_path = cache_dir / "explore.db"
    if not db_path.exists():
        fail(f"{cache_dir} is not a cache (no explore.db)")
    with MetaDB(db_path) as db:
        n_images, n_bytes = db.image_stats()
        outcomes = db.outcome_counts()
    indexes = {}
    for path in sorted((cache_dir / "index").glob("*.faiss")):
        import faiss
        indexes[path.stem] = faiss.read_index(str(path)).ntotal
    stats = {"images": n_images, "bytes": n_bytes, "attempts": sum(outcomes.values()),
             "outcomes": outcomes, "index_vectors": indexes}
    if json_:
        print(json.dumps(stats))
        return
    from rich.table import Table

    table = Table("outcome", "count", title=f"{cache_dir}: {n_images} images, {n_bytes / 1e6:.1f} MB")
    for name, n in outcomes.items():
        table.add_row(name, str(n))
    Console().print(table)
    for name, n in indexes.items():
        Console().print(f"index {name}: {n} vectors")


@cache_app.command("verify")
def cache_verify(cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")]) -> None:
    """Check that files, database rows and the FAISS index agree."""
    not_built("explore cache verify")


if __name__ == "__main__":
    app()
