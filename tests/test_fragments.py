"""Mask fidelity: detached specks are reported (mask_fragments) and removed by convert --drop-fragments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset import meta_path, open_dataset
from pipeline.errors import UserError
from pipeline.fragments import analyse, clean_mask, drop_fragments, fragment_problem
from pipeline.masks import encode_rle, mask_bbox
from pipeline.records import ObjectAnn

FORK_JOB = "sam2_demo_fork_export/c6709f62-6eaa-4bd2-b423-320a10eb5397"


def _speck_object() -> ObjectAnn:
    mask = np.zeros((100, 200), np.uint8)
    mask[20:60, 10:50] = 1  # the object: 1600 px
    mask[90:92, 190:193] = 1  # a 6 px speck far away
    return ObjectAnn(3, "cup", mask_bbox(mask), int(mask.sum()), encode_rle(mask))


def test_a_far_speck_is_found_and_dropped() -> None:
    obj = _speck_object()
    found = analyse(np.ones((1, 1), np.uint8) * 0)
    assert found is None
    problem = fragment_problem(obj, max_share=0.05, min_box_growth=0.05)
    assert "1 detached piece(s) of 6 px" in problem and "[10, 20, 193, 92]" in problem and "[10, 20, 50, 60]" in problem
    changes = drop_fragments([obj])
    assert changes == [{"object_id": 3, "label": "cup", "box_before": [10, 20, 193, 92], "box_after": [10, 20, 50, 60],
                        "area_before": 1606, "area_after": 1600}]
    assert obj.bbox == [10, 20, 50, 60] and obj.area == 1600
    assert fragment_problem(obj, 0.05, 0.05) == ""  # nothing left to report


def test_a_speck_inside_the_box_or_a_large_piece_is_not_reported() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[20:60, 10:50] = 1
    mask[30:32, 30:32] = 0
    mask[40, 20] = 0
    mask[45, 25] = 1
    inside = mask.copy()
    inside[25, 55:57] = 1  # a 2 px speck 5 px off the right edge: the box grows ~12%, but with a 0.15 growth floor
    obj = ObjectAnn(1, "cup", mask_bbox(inside), int(inside.sum()), encode_rle(inside))
    assert fragment_problem(obj, 0.05, 0.15) == ""
    halves = np.zeros((100, 200), np.uint8)
    halves[10:50, 10:50] = 1
    halves[10:50, 120:160] = 1  # two equal pieces (a partly occluded object): both stay
    assert fragment_problem(ObjectAnn(2, "car", mask_bbox(halves), 3200, encode_rle(halves)), 0.05, 0.05) == ""
    assert clean_mask(halves).sum() == 3200


def _convert_fork(fixtures_dir: Path, out: Path, **kwargs: object) -> dict:
    from pipeline.ingest import convert

    convert(fixtures_dir / FORK_JOB, out, allow_overlay_frames=True, max_frames=1, **kwargs)  # type: ignore[arg-type]
    return json.loads(meta_path(out).read_text())


def test_real_fork_kettle_box_shrinks_to_its_own(fixtures_dir: Path, tmp_path: Path) -> None:
    from pipeline.quality import run_rules

    _convert_fork(fixtures_dir, tmp_path / "raw")
    raw = open_dataset(tmp_path / "raw").records()[0].objects[0]
    assert raw.bbox == [350, 298, 945, 633] and raw.area == 70670
    report = run_rules(tmp_path / "raw", {"image_token_budget": {"severity": "off"}})
    finding = next(f for f in report.findings if f.rule == "mask_fragments")
    assert finding.severity == "warning" and len(finding.records) == 1
    assert "3 detached piece(s) of 175, 15, 10 px" in finding.details[0]
    assert "[390, 298, 830, 633]" in finding.details[0] and "box IoU 0.74" in finding.details[0]

    meta = _convert_fork(fixtures_dir, tmp_path / "clean", drop_fragments=True)
    kettle = open_dataset(tmp_path / "clean").records()[0].objects[0]
    assert kettle.bbox == [390, 298, 830, 633] and kettle.area == 70470
    assert meta["mask_fragments"]["objects_corrected"] == 1 and meta["mask_fragments"]["pixels_removed"] == 200
    change = meta["mask_fragments"]["corrections"][0]
    assert change["box_before"] == [350, 298, 945, 633] and change["box_after"] == [390, 298, 830, 633]
    assert change["frame_index"] == 0 and meta["mask_fragments"]["keep_share"] == 0.05
    answer = json.loads((tmp_path / "clean" / "llava.json").read_text())[0]["conversations"][1]["value"]
    assert '"box":[30,41,65,88]' in answer  # the kettle's own box in the json convention (0-100); not [27,41,74,88]
    after = run_rules(tmp_path / "clean", {"image_token_budget": {"severity": "off"}})
    assert not [f for f in after.findings if f.rule == "mask_fragments"]

    # a lower share keeps the 175 px speck on the hand (0.25% of the area), drops the two on the mug
    _convert_fork(fixtures_dir, tmp_path / "low", drop_fragments=True, keep_share=0.002)
    assert open_dataset(tmp_path / "low").records()[0].objects[0].bbox == [350, 298, 830, 633]


def test_keep_share_is_checked(tmp_path: Path) -> None:
    from pipeline.ingest import convert

    with pytest.raises(UserError, match="only applies with --drop-fragments"):
        convert(tmp_path / "x.zip", tmp_path / "out", keep_share=0.1)
    with pytest.raises(UserError, match="between 0 and 1"):
        convert(tmp_path / "x.zip", tmp_path / "out", drop_fragments=True, keep_share=1.5)
