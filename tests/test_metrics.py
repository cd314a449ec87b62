"""Metrics on hand-made cases with known answers."""

import numpy as np
import pytest

from pipeline.metrics import (
    ConfusionMatrix,
    DetectionSample,
    coco_ap,
    count_scores,
    mask_scores,
    match_boxes,
    matched_iou,
)


def test_matched_iou_perfect_partial_and_penalties():
    truth = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert matched_iou(truth, truth) == pytest.approx(1.0)
    # one box shifted by half its width: IoU = 50/150
    assert matched_iou([[5, 0, 15, 10]], [[0, 0, 10, 10]]) == pytest.approx(1 / 3)
    # a missed object counts as 0: (1 + 0) / 2
    assert matched_iou([[0, 0, 10, 10]], truth) == pytest.approx(0.5)
    # an extra false box also halves the score
    assert matched_iou(truth + [[50, 50, 60, 60]], truth) == pytest.approx(2 / 3)
    assert matched_iou([], []) == 1.0
    assert matched_iou([], truth) == 0.0


def test_matching_is_one_to_one_and_order_free():
    truth = [[0, 0, 10, 10], [8, 0, 18, 10]]
    pred = [[8, 0, 18, 10], [0, 0, 10, 10]]
    pairs = sorted(match_boxes(pred, truth))
    assert [(p, t) for p, t, _ in pairs] == [(0, 1), (1, 0)]
    assert all(iou == pytest.approx(1.0) for _, _, iou in pairs)


def test_coco_ap_perfect_and_empty_predictions():
    samples = [
        DetectionSample("a", [("car", [0, 0, 50, 50])], [("car", [0, 0, 50, 50])], 100, 100),
        DetectionSample("b", [("dog", [10, 10, 40, 60])], [("dog", [10, 10, 40, 60])], 100, 100),
    ]
    assert coco_ap(samples) == {"map": pytest.approx(1.0), "ap50": pytest.approx(1.0)}
    empty = [DetectionSample("a", [], [("car", [0, 0, 50, 50])], 100, 100)]
    assert coco_ap(empty) == {"ap50": 0.0, "map": 0.0}


def test_coco_ap_half_recall_matches_cocoeval_definition():
    # two ground-truth cars, one found exactly and one missed: precision 1 up to recall 0.5 -> AP ~ 0.5 (101-point)
    samples = [
        DetectionSample("a", [("car", [0, 0, 50, 50])], [("car", [0, 0, 50, 50])], 100, 100),
        DetectionSample("b", [], [("car", [20, 20, 60, 60])], 100, 100),
    ]
    result = coco_ap(samples)
    assert result["ap50"] == pytest.approx(51 / 101, abs=1e-6)
    assert result["map"] == pytest.approx(51 / 101, abs=1e-6)


def test_coco_ap_iou_between_thresholds():
    # IoU 0.6 counts at 0.5 and 0.55, 0.6 (>=) but not above: map = 3/10 of ap50
    truth = [0.0, 0.0, 100.0, 100.0]
    pred = [0.0, 0.0, 100.0, 60.0]  # IoU 0.6
    result = coco_ap([DetectionSample("a", [("x", pred)], [("x", truth)], 200, 200)])
    assert result["ap50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.3)


def test_mask_scores_known_values():
    truth = np.zeros((10, 10), bool)
    truth[:, :5] = True
    pred = np.zeros((10, 10), bool)
    pred[:, 2:7] = True
    scores = mask_scores(pred, truth)
    assert scores["mask_iou"] == pytest.approx(30 / 70)
    assert scores["dice"] == pytest.approx(60 / 100)
    assert scores["pixel_accuracy"] == pytest.approx(60 / 100)


def test_confusion_and_counts():
    cm = ConfusionMatrix()
    for truth, pred in [("car", "car"), ("car", "dog"), ("dog", "dog"), ("dog", None)]:
        cm.add(truth, pred)
    assert cm.accuracy() == pytest.approx(0.5)
    table = cm.as_table()
    assert table["labels"] == ["<unparsed>", "car", "dog"]
    assert table["matrix"][1] == [0, 1, 1]
    assert count_scores([2, 3, None], [2, 1, 4]) == {"count_accuracy": pytest.approx(1 / 3), "count_mae": 2.0}
    assert count_scores([], []) == {"count_accuracy": None, "count_mae": None}
