"""Builds a run's parts from its config and drives it: the composition root of `explore run`.

The loop itself (explorer/run/loop.py) is handed finished parts; this module decides which parts,
starts the sandbox web when the target lives there, handles Ctrl-C, and prints the summary.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.text import Text

from explorer.config import Config, SandboxConfig, apply_overrides, is_sandbox_target, resolve_init
from explorer.errors import UserError
from explorer.run.preflight import preset_line, say_round_estimate
from explorer.session import Budget, RunDir
from explorer.terminal import plain


@contextlib.contextmanager
def sandbox_for(cfg: Config):
    """Start the sandbox web in-process when the run needs it; yield it (or None)."""
    needs = is_sandbox_target(cfg.run.target) or cfg.crawl.engine == "sandbox"
    if not needs:
        yield None
        return
    from explorer.sandbox.server import start_sandbox

    with start_sandbox(**asdict(cfg.sandbox)) as server:  # (all of sandbox.*: the web
        yield server                                                  # and the target one world)


def resolve_target(cfg: Config, world=None):
    """The target dataset. A sandbox target is first written out by its world (like a
    download), then read as a folder; `world` defaults to the sandbox world of cfg's seed."""
    from explorer.inputs.targets import TargetError, load_folder, load_target

    spec = cfg.run.target
    data_root = Path(cfg.run.data_root).expanduser()
    if is_sandbox_target(spec):
        if world is None:
            from explorer.sandbox.world import World

            world = World(cfg.sandbox.seed, test_per_class=cfg.sandbox.test_per_class, looks=cfg.sandbox.looks)
        if spec not in world.target_names:
            raise UserError(f"unknown sandbox target {spec!r}; have {', '.join(world.target_names)}")
        default = SandboxConfig.test_per_class
        name = spec if world.test_per_class == default else f"{spec}-test{world.test_per_class}"
        name += "" if world.looks == "family" else f"-{world.looks}"
        folder = world.write_target(spec, data_root / f"sandbox-seed{cfg.sandbox.seed}" / name)
        return load_folder(folder, name=spec)
    try:
        return load_target(spec, data_root, download=True)
    except TargetError as e:
        raise UserError(str(e)) from e


def leak_index(cfg: Config, test_paths: list[str], cache_dir: Path):
    """The LeakIndex of a target's test images (None for none): the web's copies of them are
    dropped by the crawl, the copy hash only where it is turned on (crawl.leak_hamming); read
    from the files as the crawl would see them, or from `cache_dir` where an earlier start
    stored the index of the same files (leak_store.py)."""
    from explorer.crawl.decontam import LeakIndex
    from explorer.crawl.images import cheap_embedding, load_rgb
    from explorer.crawl.leak_store import stored_leak_index

    if not test_paths:
        return None
    hashes = cfg.crawl.leak_hamming >= 0
    return stored_leak_index(test_paths, lambda: LeakIndex.from_images(
        (load_rgb(p) for p in test_paths), cheap_embedding, hashes=hashes), cache_dir, hashes)


def exclusion_index(cfg: Config, spec: str, directory: Path, cache_dir: Path):
    """`explore fetch --exclude`: the LeakIndex of target `spec`'s test images, which are
    written under `directory` where they are not files already (a sandbox target, cifar). A
    target without a test split is a UserError."""
    target = resolve_target(replace(cfg, run=replace(cfg.run, target=spec)))
    if target.test is None:
        raise UserError(f"--exclude {spec}: that target has no test split to keep out")
    return leak_index(cfg, target.materialise(directory, "test"), cache_dir)


def load_concepts(cfg: Config, sandbox) -> list[str]:
    from explorer.inputs.vocab import VocabError, load_vocab, normalise_concepts

    if cfg.policy.vocab == "sandbox":
        if sandbox is None:
            raise UserError("policy.vocab=sandbox needs the sandbox web")
        return normalise_concepts(list(sandbox.world.concepts))
    try:
        return load_vocab(cfg.policy.vocab)
    except VocabError as e:
        raise UserError(str(e)) from e


def load_concept_descriptors(cfg: Config, concepts: list[str], sandbox) -> dict[str, list[str]]:
    """Each concept's descriptor queries (explorer/inputs/descriptors.py), for the policy's re-asks."""
    from explorer.inputs.descriptors import concept_descriptors
    from explorer.inputs.vocab import VocabError

    world = sandbox.world.descriptors if sandbox is not None and cfg.policy.vocab == "sandbox" else None
    try:
        return concept_descriptors(cfg.policy.vocab, concepts, cfg.policy.concept_descriptors,
                                   world_descriptors=world)
    except VocabError as e:
        raise UserError(str(e)) from e


def removed_test_copies(db_path: Path) -> int:
    """Crawl attempts dropped as copies of the target's test images (outcome test_leak)."""
    from cache.db import MetaDB

    if not Path(db_path).exists():
        return 0
    with MetaDB(db_path) as db:
        return db.outcome_counts().get("test_leak", 0)


@dataclass
class Parts:
    cache: object
    crawler: object
    learner: object
    target: object
    views: list = field(default_factory=list)   # after_round observers to close (TensorBoard)

    def close(self) -> None:
        for view in self.views:
            view.close()
        self.crawler.close()
        self.cache.close()


def build(run: RunDir, cfg: Config, sandbox, console: Console, quiet: bool, ranks=None):
    from explorer.crawl.crawler import Crawler, open_cache
    from explorer.engines import CorpusEngine, make_engine
    from explorer.engines.cached import CachedEngine
    from explorer.model.learner import Learner, pick_device
    from explorer.run.html_report import round_writer
    from explorer.run.loop import Explorer
    from explorer.run.progress import RunProgress
    from explorer.run.tensorboard import make_tensorboard
    from explorer.inputs.vocab import class_name_texts, concept_embeddings
    from policies.base import load_descriptors
    from policies.registry import make_policy
    from policies.refine import Refinements

    pick_device(cfg.run.device)  # a device this machine lacks: said before anything starts
    target = resolve_target(cfg, sandbox.world if sandbox else None)
    train_paths = target.materialise(run.root / "target", "train")
    test_paths = target.materialise(run.root / "target", "test") if target.test is not None else []

    cache = open_cache(run.cache_dir(cfg), cfg.crawl, db_path=run.db_path)
    allow = list(cfg.crawl.allow) + ([sandbox.host_port] if sandbox else [])
    try:
        engine = make_engine(cfg.crawl.engine, cfg.crawl, sandbox_url=sandbox.url if sandbox else None,
                             progress=not quiet)
    except ValueError as e:
        raise UserError(str(e)) from e
    leak = leak_index(cfg, test_paths, run.cache_dir(cfg))
    crawler = Crawler.for_cache(cache, cfg.crawl, allow=allow, leak_index=leak,
                                corpus_root=engine.root if isinstance(engine, CorpusEngine) else None,
                                stop_when_full=True)
    crawler.reconcile_index()  # a kill between a DB commit and the index save left vectors out
    if cfg.crawl.pool == "ray":  # Ray started or joined now, before any search runs beside its start
        crawler.fetcher          # (which changes this process's proxy settings for a while: ray_fetcher.py)

    concepts = load_concepts(cfg, sandbox)
    embeddings = concept_embeddings(concepts, cfg.policy.text_model,
                                    Path(cfg.policy.embedding_cache).expanduser(), progress=not quiet)
    relevance = None
    if cfg.policy.name == "oracle":
        if sandbox is None or not is_sandbox_target(cfg.run.target):
            raise UserError("the oracle policy knows the ground truth of sandbox targets only")
        relevance = sandbox.world.relevance(cfg.run.target)
    try:
        policy = make_policy(cfg.policy.name, concepts, embeddings, cfg.policy, cfg.run.seed,
                             relevance=relevance)
    except ValueError as e:
        raise UserError(str(e)) from e
    guided = cfg.policy.class_names and cfg.policy.class_names_share > 0
    names = class_name_texts(target.classes) if guided else []
    if names and policy.takes_prior:   # the first round drawn near the target's names, not blind
        policy.use_class_names(concept_embeddings(names, cfg.policy.text_model,
                                                  Path(cfg.policy.embedding_cache).expanduser(), progress=False))

    policy.offer = Refinements(pages=engine.pages, backends=tuple(engine.backends),
                               descriptors=load_concept_descriptors(cfg, concepts, sandbox),
                               max_page=cfg.policy.max_page)

    learner = Learner(cfg, run, train_paths, target, ranks=ranks)   # (ranks: under torchrun)
    if learner.policy_state is not None:
        policy.load_state_dict(learner.policy_state)
    budget = Budget(run, cfg.run.hours)
    if policy.prior is not None and not learner.rounds_done:
        share = cfg.policy.class_names_share
        console.print(plain(f"{'the' if share >= 1 else f'{share:.0%} of the'} first round's concepts are "
                            f"drawn near the target's {len(names)} class "
                            f"names ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); "
                            "--set policy.class_names=false draws them blind"))
    if learner.rounds_done:
        console.print(plain(f"resuming {run.root} at round {learner.rounds_done}, "
                            f"{budget.spent_s / 3600:.2f} h of {cfg.run.hours:g} h spent"))
    # RUN_DIR/tb, where tensorboard is installed
    tensorboard = [tb for tb in (make_tensorboard(run, run.cache_dir(cfg)),) if tb is not None]
    explorer = Explorer(cfg, run, cache.db, CachedEngine(engine, cache.db), crawler, policy, learner,
                        budget, descriptors=load_descriptors(cfg.policy.descriptors),
                        progress=RunProgress(console, quiet),
                        after_round=[round_writer(run), *tensorboard])   # RUN_DIR/report.html and tb, every round
    learner.progress = explorer.progress
    return explorer, Parts(cache, crawler, learner, target, tensorboard)


def finish(run: RunDir, cfg: Config, parts: Parts, console: Console, stopped: bool) -> None:
    """The user's summary: the reward table, the final evaluation, where everything is."""
    import json

    from explorer.run import report
    from explorer.model.evaluate import checkpoint_id, evaluate_target, format_table

    out = Console()
    rounds = run.read_rounds()
    out.print(report.rounds_table(rounds))
    concepts = report.concept_rewards(run)
    if concepts:
        out.print(report.concepts_table(concepts[:10], "Best concepts"))
    target = parts.target
    if stopped:
        out.print("stopped before the budget ran out: `explore resume` continues it")
    elif rounds and target.labelled and target.test is not None and run.latest_checkpoint.exists():
        results = evaluate_target(parts.learner.encode_images, target, cfg.eval,
                                  feature_cache=run.root / "features",
                                  ckpt_id=checkpoint_id(run.latest_checkpoint))
        results["test_copies_removed"] = parts.cache.db.outcome_counts().get("test_leak", 0)
        (run.root / "eval.json").write_text(json.dumps(results, indent=1, default=str))
        out.print(format_table(results))
    write_final_report(run, out, "stopped (explore resume continues it)" if stopped else "finished")
    out.print(Text.assemble("run directory: ", plain(run.root, "bold"),
                            plain(f"  (explore status / rewards / eval / report {run.root})")))


def write_final_report(run: RunDir, out: Console, state: str) -> None:
    """RUN_DIR/report.html once more, with the evaluation; a report that cannot be written is
    said, not raised: the run and its evaluation are done and kept."""
    from explorer.run.html_report import write_report

    try:
        path = write_report(run, state=state)
    except Exception as e:  # noqa: BLE001 - a view of the run, never the run
        out.print(plain(f"the report was not written: {type(e).__name__}: {e}"))
        return
    out.print(Text.assemble("report: ", plain(path, "bold")))


def settle_config(run: RunDir, fresh: Config | None, overrides: list[str], console: Console) -> Config:
    """The config this start runs with. A run that has begun its first round keeps its saved
    config, with `overrides` applied; one that has not is not pinned: it starts with `fresh`,
    the config `explore run` built from its own options, when there is one."""
    if fresh is not None and not run.began():
        if run.exists():
            console.print(Text.assemble(plain(run.root, "bold"), plain(
                " never began its first round: starting it with this command's options, not its saved ones")))
        return fresh
    if fresh is not None:
        console.print(Text.assemble(plain(run.root, "bold"), plain(
            " exists: resuming it (its saved config wins; --set still applies).")))
    cfg = apply_overrides(run.load_config(), list(overrides))
    cfg.model.init = resolve_init(cfg)   # a hand-written config.toml may leave it "auto"
    return cfg


def settle_init(cfg: Config, console: Console) -> None:
    """Resolve model.init and make sure its weights can be had and fit the model, so that a
    missing download or a wrong file ends the command in one line (naming --init and the fix)
    before the run directory is written."""
    from explorer.model.mug import WeightsUnavailable, check_init

    cfg.model.init = resolve_init(cfg)
    report = check_init(cfg.model)
    if report is not None:
        console.print(plain(report.line(cfg.model.init)))
    elif not is_sandbox_target(cfg.run.target):
        console.print(plain(f"model.init=scratch: {cfg.model.name} starts from random weights "
                            "(--init timm:NAME or file:PATH starts it pretrained)"))
    if cfg.reward.encoder != "model":
        try:
            report = check_init(replace(cfg.model, init=cfg.reward.encoder))
        except WeightsUnavailable as e:  # (its message names --init: say which option it was)
            raise WeightsUnavailable(str(e).replace("--init ", "--set reward.encoder=")) from None
        line = report.line(cfg.reward.encoder) if report else "model.init=scratch: random weights"
        console.print(plain("rewards from a frozen encoder, " + line.replace("model.init=", "reward.encoder=", 1)))


def run_exploration(run: RunDir, console: Console, quiet: bool = False, fresh: Config | None = None,
                    overrides: list[str] = ()) -> None:
    """Start or resume the run in `run`. Its lock is taken first and held throughout, so that a
    command refused because the run is live writes nothing, not even its config.
    Under torchrun (explorer/model/ddp.py) rank 0 does all of this and the other ranks only
    train with it (`learner.follow`); rank 0 tells them to stop however its run ends."""
    from explorer.model import ddp
    from explorer.model.learner import follow

    ranks = ddp.start()
    try:
        if ranks is not None and not ranks.is_main:
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is rank 0's to handle
            follow(ranks)
            return
        try:
            _explore(run, console, quiet, fresh, overrides, ranks)
        finally:
            if ranks is not None:
                ranks.stop()
    finally:
        if ranks is not None:
            ranks.close()


def _explore(run: RunDir, console: Console, quiet: bool, fresh: Config | None,
             overrides: list[str], ranks) -> None:
    starting = fresh is not None and not run.began()
    if starting:
        settle_init(fresh, console)
        if fresh.run.preset != "auto":   # chosen by `explore run` (preflight.choose_preset)
            console.print(plain(preset_line(fresh)), soft_wrap=True)
    with run.lock():
        cfg = settle_config(run, fresh, overrides, console)
        run.save_config(cfg)
        with sandbox_for(cfg) as sandbox:
            if sandbox is not None and cfg.sandbox.port == 0:
                # pinned for resumes: cached search results hold URLs with this port
                cfg.sandbox.port = int(sandbox.host_port.rpartition(":")[2])
                run.save_config(cfg)
            explorer, parts = build(run, cfg, sandbox, console, quiet, ranks)
            try:
                if starting:
                    say_round_estimate(cfg, parts.learner, parts.target, console)
                with explorer.progress:
                    _drive(explorer)
                finish(run, cfg, parts, console, stopped=explorer.stop_requested
                       and not explorer.budget.exhausted())
            finally:
                parts.close()


def _drive(explorer) -> int:
    """Run the loop; the first Ctrl-C stops at the next safe point (after the round's
    checkpoint), the second stops at once (the run still resumes: it is a kill)."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        presses = 0

        def on_sigint() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                explorer.request_stop()
                explorer.progress.console.print("[yellow]stopping after this round's checkpoint; "
                                       "Ctrl-C again to stop at once[/]")
            else:
                os._exit(130)

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, explorer.request_stop)
        try:
            return await explorer.run()
        finally:
            await explorer.engine.aclose()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def evaluate_run(run: RunDir, checkpoint: Path | None, protocols: tuple[str, ...],
                 fractions: tuple[float, ...] | None) -> dict:
    """`explore eval`: frozen features of a checkpoint on the run's target."""
    from explorer.model.evaluate import checkpoint_id, evaluate_target
    from explorer.model.learner import Learner, pick_device

    cfg = run.load_config()
    pick_device(cfg.run.device)
    path = checkpoint or run.latest_checkpoint
    if not Path(path).exists():
        raise UserError(f"no checkpoint at {path} (has the run finished a round?)")
    target = resolve_target(cfg)
    learner = Learner(cfg, run, [], target, checkpoint=Path(path))
    results = evaluate_target(learner.encode_images, target, cfg.eval, protocols=protocols,
                              fractions=fractions, feature_cache=run.root / "features",
                              ckpt_id=checkpoint_id(path))  # a TargetError is a UserError already
    results["test_copies_removed"] = removed_test_copies(run.db_path)
    return results
