"""PQ / SQ / RQ: hand-built cases, and equality with the official COCO panoptic evaluation on the fixtures in
../shared/parity/panoptic (path in SEGPIPE_PANOPTIC_PARITY, which .ci/run sets)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from segpipe.coco_panoptic import evaluate_folders, id_to_rgb, rgb_to_id
from segpipe.errors import SegpipeError
from segpipe.panoptic_quality import PanopticCategory, PanopticError, PQStat, Segment, image_stat, pq_result

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def parity_root():
    value = os.environ.get("SEGPIPE_PANOPTIC_PARITY")
    if not value:
        pytest.skip("SEGPIPE_PANOPTIC_PARITY is not set (point it at ../shared/parity/panoptic)")
    root = Path(value)
    if not (root / "expected.json").is_file():
        pytest.fail(f"SEGPIPE_PANOPTIC_PARITY={value} is set but holds no expected.json")
    return root


def assert_matches_expected(score, expected):
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert score.result.summary[group][key] == pytest.approx(expected[group][key], abs=TOLERANCE), (group, key)
        assert score.result.summary[group]["n"] == expected[group]["n"]
    assert {str(c) for c in score.result.per_class} == set(expected["per_class"])
    for category, values in expected["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert score.result.per_class[int(category)][key] == pytest.approx(values[key], abs=TOLERANCE)
    for category, values in expected["pq_stat"].items():
        i = score.stat.index[int(category)]
        assert (score.stat.tp[i], score.stat.fp[i], score.stat.fn[i]) == (values["tp"], values["fp"], values["fn"])
        assert score.stat.iou[i] == pytest.approx(values["iou"], abs=TOLERANCE)


@pytest.mark.parametrize("fixture", ["", "coco_sample"])
def test_pq_equals_the_official_evaluation(parity_root, fixture):
    root = parity_root / fixture
    expected = json.loads((root / "expected.json").read_text())
    score = evaluate_folders(root / "gt.json", root / "pred.json", root / "gt", root / "pred")
    assert_matches_expected(score, expected)


def test_per_image_stats_equal_the_official_ones(parity_root):
    """Every fixture case alone: its TP / FP / FN / IoU per category equal panopticapi's for that image."""
    expected = json.loads((parity_root / "expected.json").read_text())["per_image"]
    gt = json.loads((parity_root / "gt.json").read_text())
    pred = {a["image_id"]: a for a in json.loads((parity_root / "pred.json").read_text())["annotations"]}
    categories = [c["id"] for c in gt["categories"]]
    from segpipe.coco_panoptic import read_ids, segments_of

    for truth in gt["annotations"]:
        guess = pred[truth["image_id"]]
        stat = PQStat(categories)
        image_stat(read_ids(parity_root / "gt" / truth["file_name"]), segments_of(truth, True),
                   read_ids(parity_root / "pred" / guess["file_name"]), segments_of(guess, False), stat)
        want = expected[str(truth["image_id"])]["pq_stat"]
        got = {str(c): {"tp": int(stat.tp[i]), "fp": int(stat.fp[i]), "fn": int(stat.fn[i]), "iou": stat.iou[i]}
               for c, i in stat.index.items() if stat.tp[i] + stat.fp[i] + stat.fn[i]}
        assert set(got) == {c for c, v in want.items() if v["tp"] + v["fp"] + v["fn"]}, truth["file_name"]
        for category, values in got.items():
            assert values["iou"] == pytest.approx(want[category]["iou"], abs=TOLERANCE), truth["file_name"]
            assert (values["tp"], values["fp"], values["fn"]) == tuple(want[category][k] for k in ("tp", "fp", "fn"))


CATS = [PanopticCategory(1, True, "person"), PanopticCategory(2, False, "sky")]


def score(gt, gt_segments, pred, pred_segments):
    stat = PQStat([c.id for c in CATS])
    image_stat(np.asarray(gt), gt_segments, np.asarray(pred), pred_segments, stat)
    return stat


def test_hand_built_match_needs_iou_strictly_above_half():
    gt = np.full((2, 8), 2, np.int64)  # sky
    gt[:, :4] = 5  # a 8-px person
    below = np.zeros((2, 8), np.int64)
    below[:, 2:6] = 9  # 4 of the person's pixels plus 4 outside: IoU 4/12 (pixels on VOID would leave the union)
    stat = score(gt, [Segment(5, 1), Segment(2, 2)], below, [Segment(9, 1)])
    assert (stat.tp[0], stat.fp[0], stat.fn[0]) == (0, 1, 1)
    pred = np.zeros((2, 8), np.int64)
    pred[:, :4] = 9
    pred[0, 4:8] = 9  # 8 of 8 person pixels, 4 more: IoU 8/12
    stat = score(gt, [Segment(5, 1), Segment(2, 2)], pred, [Segment(9, 1)])
    assert (stat.tp[0], stat.fp[0], stat.fn[0]) == (1, 0, 0)
    assert stat.iou[0] == pytest.approx(8 / 12)
    exactly_half = np.zeros((2, 8), np.int64)
    exactly_half[:, :2] = 9  # 4 of 8: IoU exactly 0.5 is no match
    stat = score(gt, [Segment(5, 1), Segment(2, 2)], exactly_half, [Segment(9, 1)])
    assert (stat.tp[0], stat.fp[0], stat.fn[0]) == (0, 1, 1)


def test_hand_built_void_and_crowd_rules():
    gt = np.zeros((4, 10), np.int64)  # VOID everywhere but a crowd of persons in the right half
    gt[:, 5:] = 7
    pred = np.zeros((4, 10), np.int64)
    pred[:, 3:7] = 3  # 8 px on VOID, 8 on the crowd: ignored, not a false positive
    stat = score(gt, [Segment(7, 1, iscrowd=True)], pred, [Segment(3, 1)])
    assert (stat.tp[0], stat.fp[0], stat.fn[0]) == (0, 0, 0)
    pred[:, 3:7] = 0
    pred[:, 4:] = 3  # sky on a person crowd: a false positive of sky (the crowd belongs to person)
    stat = score(gt, [Segment(7, 1, iscrowd=True)], pred, [Segment(3, 2)])
    assert (stat.fp[1], stat.fn[0]) == (1, 0)  # a crowd region is never a false negative
    result = pq_result(stat, CATS)
    assert result.summary["Things"]["n"] == 0 and result.summary["Stuff"]["pq"] == 0.0


def test_mistakes_in_the_maps_are_named():
    gt = np.ones((2, 2), np.int64)
    with pytest.raises(PanopticError, match="segment id 4 is in the prediction's PNG"):
        score(gt, [Segment(1, 2)], np.full((2, 2), 4), [])
    with pytest.raises(PanopticError, match="segment id 6 .* has no pixels"):
        score(gt, [Segment(1, 2)], np.zeros((2, 2)), [Segment(6, 2)])
    with pytest.raises(PanopticError, match="category id 9 is not in the category list"):
        score(gt, [Segment(1, 2)], gt, [Segment(1, 9)])


def test_png_ids_round_trip():
    ids = np.array([[0, 1, 256], [65536, 16777215, 123456]])
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()


def test_missing_prediction_is_one_line(tmp_path, parity_root):
    gt = json.loads((parity_root / "gt.json").read_text())
    (tmp_path / "pred.json").write_text(json.dumps({**gt, "annotations": gt["annotations"][:1]}))
    with pytest.raises(SegpipeError, match="no prediction for image_id"):
        evaluate_folders(parity_root / "gt.json", tmp_path / "pred.json", parity_root / "gt", parity_root / "gt")
