"""A round crawled before a stop and trained after it reports what its crawl fetched (the
database's attempts of its queries), not the nothing this process had left to fetch."""
import pytest

from explorer.config import apply_overrides
from tests.test_loop import db_rows, run_rounds, small_config


class Killed(Exception):
    """Stands for a kill while round 1 trains: its crawl is done, its checkpoint not written."""


def test_a_resumed_round_reports_the_urls_its_crawl_fetched_before_the_stop(tmp_path):
    run, cfg = small_config(tmp_path, 2)

    def killed_in_round_1(explorer):
        train = explorer.learner.train_round

        def train_round(round_, images):
            if round_ == 1:
                raise Killed
            return train(round_, images)
        explorer.learner.train_round = train_round

    with pytest.raises(Killed):
        run_rounds(run, cfg, prepare=killed_in_round_1)
    assert [r["round"] for r in run.read_rounds()] == [0]
    crawled = db_rows(run, "SELECT COUNT(*) FROM attempts a JOIN queries q ON a.query_id = q.id "
                           "WHERE q.round = 1")[0][0]
    assert crawled > 0
    assert db_rows(run, "SELECT COUNT(*) FROM queries WHERE round = 1 AND status != 'done'")[0][0] == 0

    run_rounds(run, apply_overrides(run.load_config(), []))   # resumed: round 1 has nothing to fetch
    first, resumed = run.read_rounds()
    assert resumed["round"] == 1 and resumed["fetched"] == crawled
    assert resumed["fetched"] == sum(resumed["outcomes"].values())
    assert first["fetched"] == sum(first["outcomes"].values()) > 0
