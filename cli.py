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
def fetch(urls: Annotated[Path, typer.Argument(help="File of URLs, one a line (or url<TAB>caption).")]) -> None:
    """Download a list of image URLs into the cache, safely and without duplicates."""
    not_built("explore fetch")


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

    from explorer.vocab import VocabError, concept_embeddings, load_vocab

    cfg = load_config(config_file, set_)
    spec = vocab_spec or cfg.policy.vocab
    try:
        concepts = load_vocab(spec)
    except VocabError as e:
        fail(str(e))
    print(f"{spec}: {len(concepts)} concepts")
    rng = np.random.default_rng(cfg.run.seed)
    for i in sorted(rng.choice(len(concepts), size=min(max(sample, 0), len(concepts)), replace=False)):
        print(f"  {concepts[i]}")
    if embed:
        emb = concept_embeddings(concepts, cfg.policy.text_model, cfg.policy.embedding_cache)
        print(f"embeddings: {emb.shape[0]} x {emb.shape[1]} ({cfg.policy.text_model}), "
              f"cached in {Path(cfg.policy.embedding_cache).expanduser()}")


@sandbox_app.command("serve")
def sandbox_serve() -> None:
    """Serve the sandbox web on 127.0.0.1 until interrupted."""
    not_built("explore sandbox serve")


@cache_app.command("stats")
def cache_stats(cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")]) -> None:
    """Images, bytes and outcome counts of a cache."""
    not_built("explore cache stats")


@cache_app.command("verify")
def cache_verify(cache_dir: Annotated[Path, typer.Argument(help="Cache directory.")]) -> None:
    """Check that files, database rows and the FAISS index agree."""
    not_built("explore cache verify")


if __name__ == "__main__":
    app()
