"""Task metrics (top1, mask-iou) against independent computations on planted arrays; batching
invariance; bounds; the registry, parameters and a plug-in through a fake entry point."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.precision.evaluate import Evaluator, metric_criterion
from trtq.precision.metrics import available_metrics, get_metric, is_task_metric


def _top1_by_hand(a: np.ndarray, r: np.ndarray) -> float:
    """Loop over every position of the leading axes; compare the index of the first maximum."""
    a2 = a.reshape(-1, a.shape[-1]).tolist()
    r2 = r.reshape(-1, r.shape[-1]).tolist()
    agree = sum(
        row_a.index(max(row_a)) == row_r.index(max(row_r)) for row_a, row_r in zip(a2, r2, strict=True)
    )
    return agree / len(a2)


def _iou_by_hand(pairs, t: float) -> float:
    """Pooled IoU over all pairs from Python sets of (pair, flat index) positions."""
    a_set, b_set = set(), set()
    for k, (a, r) in enumerate(pairs):
        a_set |= {(k, i) for i, v in enumerate(a.ravel().tolist()) if v > t}
        b_set |= {(k, i) for i, v in enumerate(r.ravel().tolist()) if v > t}
    union = a_set | b_set
    return len(a_set & b_set) / len(union) if union else 1.0


def _acc(name: str, **params):
    return get_metric(name).make(**params)


def test_top1_matches_an_independent_count_for_logits_and_sequences():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(32, 10)).astype(np.float32)
    cand = ref.copy()
    cand[:5] = rng.normal(size=(5, 10))  # planted: rows that likely change their argmax
    expected = _top1_by_hand(cand, ref)
    assert 0.8 < expected < 1.0
    assert _acc("top1").update(cand, ref).result()["top1"] == pytest.approx(expected, abs=0)

    seq_ref = rng.normal(size=(3, 40, 97)).astype(np.float32)  # [N, T, C]: PP-OCR rec's shape
    seq = seq_ref + rng.normal(scale=0.5, size=seq_ref.shape).astype(np.float32)
    got = _acc("top1").update(seq, seq_ref).result()["top1"]
    assert got == pytest.approx(_top1_by_hand(seq, seq_ref), abs=0)  # per time step: 120 positions
    assert 0.0 < got < 1.0


def test_top1_counts_a_nan_position_as_a_disagreement():
    ref = np.eye(4, dtype=np.float32)
    cand = ref.copy()
    cand[2, 0] = np.nan  # argmax would pick the NaN (index 0), which differs anyway
    cand[3, 1] = np.nan  # argmax picks index 1 (the NaN) while FP32 says 3
    cand[1, 3] = np.nan  # argmax picks 3, FP32 says 1
    assert _acc("top1").update(cand, ref).result()["top1"] == 0.25


def test_mask_iou_is_pooled_not_a_mean_of_per_image_ious():
    t = 0.3
    # image 1: a big mask, nearly right; image 2: a tiny mask, all wrong
    ref1 = np.zeros((1, 1, 20, 20), np.float32)
    ref1[..., :10, :] = 0.9
    cand1 = ref1.copy()
    cand1[..., 9, :] = 0.1
    ref2 = np.zeros((1, 1, 20, 20), np.float32)
    ref2[..., 0, 0] = 0.9
    cand2 = np.zeros_like(ref2)
    cand2[..., 19, 19] = 0.5
    pairs = [(cand1, ref1), (cand2, ref2)]
    acc = _acc("mask-iou", binarize=t)
    for a, r in pairs:
        acc.update(a, r)
    pooled = _iou_by_hand(pairs, t)
    per_image_mean = (_iou_by_hand(pairs[:1], t) + _iou_by_hand(pairs[1:], t)) / 2
    assert acc.result()["mask_iou"] == pytest.approx(pooled, abs=0)
    assert pooled == pytest.approx(180 / 202) and per_image_mean == pytest.approx(0.45)


def test_mask_iou_edge_cases():
    zeros = np.zeros((2, 8), np.float32)
    assert _acc("mask-iou", binarize=0.5).update(zeros, zeros).result()["mask_iou"] == 1.0  # both empty
    ref = np.full((2, 8), 0.9, np.float32)
    cand = ref.copy()
    cand[0, :4] = np.nan  # NaN pixels are wrong: in the union, never in the intersection
    assert _acc("mask-iou", binarize=0.5).update(cand, ref).result()["mask_iou"] == 12 / 16
    cand = np.full((2, 8), np.nan, np.float32)
    assert _acc("mask-iou", binarize=0.5).update(cand, zeros).result()["mask_iou"] == 0.0


def test_mask_iou_warns_when_no_map_has_a_pixel_above_the_threshold(caplog):
    """A --binarize above everything the model outputs makes every candidate pass (IoU 1 by
    convention): the user is told (the commands show an identical warning once)."""
    probs = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)  # a map in [0, 1)
    with caplog.at_level("WARNING", logger="trtq"):
        assert _acc("mask-iou", binarize=7.25).update(probs * 0.5, probs).result()["mask_iou"] == 1.0
        assert _acc("mask-iou", binarize=0.5).update(probs, probs).result()["mask_iou"] == 1.0  # not empty
    warned = [r.getMessage() for r in caplog.records if "mask-iou" in r.getMessage()]
    assert len(warned) == 1 and "--binarize 7.25" in warned[0] and "IoU counts as 1.0" in warned[0], warned


@pytest.mark.parametrize(
    ("name", "params", "shape"), [("top1", {}, (24, 5, 7)), ("mask-iou", {"binarize": 0.2}, (24, 1, 9, 9))]
)
def test_batching_does_not_change_the_result(name, params, shape):
    rng = np.random.default_rng(3)
    ref = rng.normal(size=shape).astype(np.float32)
    cand = (ref + rng.normal(scale=0.6, size=shape)).astype(np.float32)
    whole = _acc(name, **params).update(cand, ref).result()
    for splits in ([1] * 24, [5, 7, 12], [23, 1]):
        acc = _acc(name, **params)
        start = 0
        for n in splits:
            acc.update(cand[start : start + n], ref[start : start + n])
            start += n
        assert acc.result() == whole


@pytest.mark.parametrize(("name", "params"), [("top1", {}), ("mask-iou", {"binarize": 0.0})])
def test_bound_is_never_beaten_by_any_rest_of_the_data(name, params):
    rng = np.random.default_rng(4)
    seen_r = rng.normal(size=(6, 10)).astype(np.float32)
    seen_a = rng.normal(size=(6, 10)).astype(np.float32)
    rest_r = rng.normal(size=(6, 10)).astype(np.float32)
    acc = _acc(name, **params).update(seen_a, seen_r)
    bound = acc.bound(*acc.rest(rest_r))[get_metric(name).key]
    for rest_a in (rest_r, rest_r * -1, rng.normal(size=rest_r.shape).astype(np.float32)):
        final = _acc(name, **params).update(seen_a, seen_r).update(rest_a, rest_r).result()
        assert final[get_metric(name).key] <= bound + 1e-12
    perfect = _acc(name, **params).update(seen_a, seen_r).update(rest_r, rest_r).result()
    assert perfect[get_metric(name).key] == pytest.approx(bound)  # the bound is reached exactly


def test_registry_parameters_and_criteria():
    names = [m.name for m in available_metrics()]
    assert {"cosine", "rel-l2", "top1", "mask-iou"} <= set(names)
    assert is_task_metric("mask-iou") and not is_task_metric("cosine")
    assert get_metric("mask_iou") is get_metric("mask-iou")
    with pytest.raises(InputError, match="unknown metric 'iou'.*top1, mask-iou"):
        get_metric("iou")
    with pytest.raises(InputError, match="metric 'mask-iou' needs --binarize T"):
        metric_criterion("mask-iou")
    with pytest.raises(
        InputError, match=r"--binarize \(a parameter of mask-iou\) does not apply to metric 'cosine'"
    ):
        metric_criterion("cosine", params={"binarize": 0.3})
    crit = metric_criterion("mask-iou", 0.97, {"binarize": 0.3})
    assert crit.describe() == "mask-iou >= 0.97 on every output (binarize 0.3)"
    assert crit.params == (("binarize", 0.3),)
    assert metric_criterion("top1").threshold == 0.99
    assert metric_criterion("mask-iou", params={"binarize": 0.5}).threshold == 0.95


class _Fixed:
    """A build whose candidate returns planted outputs per batch (by batch id)."""

    backend_label = "planted"

    def __init__(self, outputs):
        self.outputs = outputs

    def __call__(self, pins):
        outputs = self.outputs

        class Candidate:
            def run(self, feeds):
                return {"y": outputs[int(feeds["i"][0])]}

            def close(self):
                pass

        return Candidate()


def _planted_eval(criterion, cand, ref, early_stop=True):
    batches = [{"i": np.array([k])} for k in range(len(ref))]
    reference = [{"y": r} for r in ref]
    ev = Evaluator(_Fixed(cand), batches, criterion, reference=reference, early_stop=early_stop)
    return ev(frozenset())


def test_evaluator_stops_early_on_mask_iou_and_agrees_with_a_full_run():
    rng = np.random.default_rng(5)
    ref = [rng.uniform(size=(1, 16, 16)).astype(np.float32) for _ in range(6)]
    bad = [np.zeros_like(r) for r in ref]  # predicts no text at all: IoU 0
    crit = metric_criterion("mask-iou", 0.9, {"binarize": 0.5})
    early = _planted_eval(crit, bad, ref)
    full = _planted_eval(crit, bad, ref, early_stop=False)
    assert early.stopped_early and not early.passed and not full.passed
    assert early.metric >= full.metric == 0.0
    good = _planted_eval(crit, ref, ref)
    assert good.passed and not good.stopped_early and good.metric == 1.0
    pairs = [(b, r) for b, r in zip(bad, ref, strict=True)]
    assert full.outputs["y"]["mask_iou"] == _iou_by_hand(pairs, 0.5)


PLUGIN = textwrap.dedent(
    '''
    import numpy as np
    from trtq.precision.task_metrics import TaskMetric

    class SignAgreement:
        """Share of elements whose sign agrees with FP32; deliberately without a bound."""

        def __init__(self):
            self.same = self.n = 0

        def update(self, actual, reference):
            self.same += int(np.count_nonzero(np.sign(actual) == np.sign(reference)))
            self.n += int(np.size(reference))
            return self

        def result(self):
            return {"sign_agreement": self.same / self.n if self.n else float("nan")}

    SIGN = TaskMetric("sign-agreement", "sign_agreement", True, SignAgreement, default_threshold=0.9)
    '''
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "trtq_sign_metric-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "trtq_sign_metric.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trtq-sign-metric\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trtq.metrics]\nsign-agreement = trtq_sign_metric:SIGN\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("trtq_sign_metric", None)
    from trtq.precision import metrics

    metrics.METRICS.pop("sign-agreement", None)
    metrics._LOADED.clear()


def test_plugin_metric_through_an_entry_point_runs_every_batch_without_a_bound(plugin):
    metric = get_metric("sign-agreement")
    assert metric.name in [m.name for m in available_metrics()] and is_task_metric("sign-agreement")
    rng = np.random.default_rng(6)
    ref = [rng.normal(size=(4, 8)).astype(np.float32) for _ in range(5)]
    flipped = [-r for r in ref]
    crit = metric_criterion("sign-agreement")
    result = _planted_eval(crit, flipped, ref)
    assert not result.passed and not result.stopped_early  # no bound: every batch ran
    assert result.metric == 0.0 and math.isfinite(result.outputs["y"]["cosine"])
    assert _planted_eval(crit, ref, ref).passed
