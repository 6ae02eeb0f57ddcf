import numpy as np
import pytest

from explorer.config import RewardConfig
from explorer.model.reward import (image_rewards, query_rewards, query_rewards_by_round, round_query_rewards,
                             web_centre, web_contrast)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_reward_is_mean_cosine_to_k_nearest_targets():
    rng = np.random.default_rng(0)
    target = unit(rng.normal(size=(40, 16)))
    cand = rng.normal(size=(7, 16)).astype(np.float32) * 3.0    # not unit: normalised inside
    sims = unit(cand) @ target.T
    expected = np.sort(sims, axis=1)[:, ::-1][:, :5].mean(axis=1)
    np.testing.assert_allclose(image_rewards(cand, target, k=5), expected, atol=1e-5)


def test_target_image_against_its_own_set_scores_the_maximum():
    rng = np.random.default_rng(1)
    target = unit(rng.normal(size=(30, 8)))
    others = rng.normal(size=(200, 8))
    # k = 1: its nearest target is itself, cosine 1, the largest reward any image can get.
    np.testing.assert_allclose(image_rewards(target, target, k=1), 1.0, atol=1e-5)
    assert image_rewards(others, target, k=1).max() < 1.0
    # k > 1 (no maximum holds in general: an image between tight targets may score higher):
    # the image's own cosine 1 is one of its k, i.e. r = (1 + (k-1) r') / k, r' its reward
    # with k-1 neighbours among the *other* targets.
    k = 4
    for i in range(5):
        rest = np.delete(target, i, axis=0)
        r_self = image_rewards(target[i:i + 1], target, k=k)[0]
        r_rest = image_rewards(target[i:i + 1], rest, k=k - 1)[0]
        assert r_self == pytest.approx((1.0 + (k - 1) * r_rest) / k, abs=1e-5)
        assert r_self > image_rewards(target[i:i + 1], rest, k=k)[0]


def test_k_is_clipped_to_the_target_size():
    rng = np.random.default_rng(2)
    target = unit(rng.normal(size=(3, 8)))
    cand = unit(rng.normal(size=(4, 8)))
    np.testing.assert_allclose(image_rewards(cand, target, k=15),
                               (cand @ target.T).mean(axis=1), atol=1e-5)


def test_bad_shapes_are_errors_and_no_candidates_is_empty():
    target = unit(np.ones((2, 4)))
    assert image_rewards(np.zeros((0, 4), np.float32), target).shape == (0,)
    with pytest.raises(ValueError):
        image_rewards(np.ones((2, 5)), target)
    with pytest.raises(ValueError):
        image_rewards(np.ones((2, 4)), np.zeros((0, 4)))


def test_query_reward_is_mean_of_kept_images_or_the_floor():
    r = query_rewards({1: [0.2, 0.4], 2: [], 3: [0.9]}, floor=-0.1)
    assert r == pytest.approx({1: 0.3, 2: -0.1, 3: 0.9})


def test_the_floor_is_the_rounds_lowest_query_reward_or_the_fixed_value():
    per_query = {1: [0.2, 0.4], 2: [], 3: [0.9]}
    lowest = round_query_rewards(per_query, RewardConfig(floor=-0.1, floor_mode="round_min"))
    assert lowest == pytest.approx({1: 0.3, 2: 0.3, 3: 0.9})
    fixed = round_query_rewards(per_query, RewardConfig(floor=-0.1, floor_mode="fixed"))
    assert fixed == pytest.approx({1: 0.3, 2: -0.1, 3: 0.9})
    assert round_query_rewards({4: []}, RewardConfig(floor=-0.1)) == {4: pytest.approx(-0.1)}


def test_each_round_has_its_own_floor():
    per_query = {1: [0.2], 2: [], 3: [0.9], 4: []}
    r = query_rewards_by_round(per_query, {1: 0, 2: 0, 3: 1, 4: 1}, RewardConfig(floor_mode="round_min"))
    assert r == pytest.approx({1: 0.2, 2: 0.2, 3: 0.9, 4: 0.9})


def test_centring_removes_a_shared_component_that_drowns_the_signal():
    """Embeddings dominated by one direction that every image shares (an untrained ViT's mean
    token): raw cosines barely rank target-like images first; cosines about the target/web
    midpoint do."""
    rng = np.random.default_rng(3)
    shared = np.zeros(32, np.float32)
    shared[0] = 1.0
    look = unit(rng.normal(size=(1, 32)))[0]                  # what target images have in common
    def images(n, target_like):
        signal = look if target_like else unit(rng.normal(size=(1, 32)))[0]
        return 20 * shared + signal + rng.normal(scale=0.1, size=(n, 32)).astype(np.float32)
    target = images(60, True)
    good, bad = images(40, True), np.concatenate([images(10, False) for _ in range(4)])
    web = np.concatenate([good[:5], bad])
    raw = image_rewards(np.concatenate([good, bad]), target, k=5)
    centred = image_rewards(np.concatenate([good, bad]), target, k=5, centre=web_centre(target, web))
    def auc(r):
        g, b = r[:40], r[40:]
        return (g[:, None] > b[None, :]).mean()
    assert raw.min() > 0.97                                   # every raw cosine looks the same
    assert auc(centred) > 0.95
    assert centred[:40].mean() - centred[40:].mean() > 10 * (raw[:40].mean() - raw[40:].mean())


def test_web_centre_is_the_midpoint_of_the_two_unit_means():
    a = unit(np.array([[1.0, 0, 0], [1.0, 0, 0]]))
    b = unit(np.array([[0, 2.0, 0], [0, 0, 3.0]]))
    np.testing.assert_allclose(web_centre(a, b), [0.5, 0.25, 0.25], atol=1e-6)


def test_web_contrast_marks_down_images_close_to_everything():
    """A 'hub' lies between the target and a crowded part of the web; a target-like image lies
    where the web is empty. The plain reward ranks the hub first; minus the contrast term (mean
    cosine to its k nearest web images, itself excluded) the target-like one wins."""
    rng = np.random.default_rng(4)
    e1, e2, e3 = np.eye(3, dtype=np.float32)
    near = lambda v, n: unit(v + 0.05 * rng.normal(size=(n, 3)))
    target = near(e1, 40)
    web = np.concatenate([near(e2, 100), near(-e1, 100)])
    hub, specific = unit(np.stack([e1 + e2, e1 + 1.1 * e3]))
    cand = np.stack([hub, specific])
    plain = image_rewards(cand, target, k=5)
    contrasted = plain - web_contrast(cand, np.concatenate([web, cand]), k=5)
    assert plain[0] > plain[1] and contrasted[1] > contrasted[0] + 0.5


def test_web_contrast_leaves_the_image_itself_out():
    rng = np.random.default_rng(5)
    web = unit(rng.normal(size=(30, 8)))
    # each web image against the web: its own cosine 1 is skipped, so the mean is over others
    expected = np.sort(web @ web.T, axis=1)[:, ::-1][:, 1:4].mean(axis=1)
    np.testing.assert_allclose(web_contrast(web, web, k=3), expected, atol=1e-5)
    outside = unit(rng.normal(size=(4, 8)))
    np.testing.assert_allclose(web_contrast(outside, web, k=3),
                               np.sort(outside @ web.T, axis=1)[:, ::-1][:, :3].mean(axis=1), atol=1e-5)
