"""Quality rules on hand-built datasets: each planted defect fires its rule exactly where planted, clean data passes,
the report renders (md/json/html/png), the CLI exits 0/1/2, and the generated sample validates end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.masks import decode_rle, encode_rle
from pipeline.quality import run_rules, validate
from pipeline.quality_context import rle_problem
from pipeline.quality_rules import DEFAULT_CONFIG, RULES, load_config
from pipeline.records import FrameRecord, ObjectAnn, write_records

W, H = 128, 96
RED, BLUE = (220, 30, 30), (30, 30, 220)


def _rect(x1: int, y1: int, x2: int, y2: int, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def _obj(object_id: int, label: str, mask: np.ndarray, bbox: list[int] | None = None) -> ObjectAnn:
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
    return ObjectAnn(object_id, label, bbox or box, int(mask.sum()), encode_rle(mask))


class Builder:
    """Writes frames (noise background + solid objects) as PNG, records.jsonl and dataset.json."""

    def __init__(self, root: Path) -> None:
        self.root, self.records, self.rng = root, [], np.random.default_rng(0)
        (root / "images").mkdir(parents=True)

    def frame(self, video: str, index: int, objects: list[tuple[ObjectAnn, tuple[int, int, int]]],
              image: np.ndarray | None = None) -> FrameRecord:
        rgb = self.rng.integers(0, 256, (H, W, 3)).astype(np.uint8) if image is None else image
        for obj, colour in objects:
            if obj.rle and rle_problem(obj.rle)[0] == "" and obj.rle["size"] == [H, W]:
                rgb[decode_rle(obj.rle) > 0] = colour
        rel = f"images/{video}/{index:06d}.png"
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(self.root / rel)
        record = FrameRecord(f"{video}:{index:06d}", "test", video, index, rel, W, H, [o for o, _ in objects])
        self.records.append(record)
        return record

    def finish(self, sources: list[dict], issues: list[dict]) -> Path:
        write_records(self.records, self.root / "records.jsonl")
        videos = sorted({r.video_id for r in self.records})
        meta = {"tool_version": "test", "frames": len(self.records), "family": None, "convention": "json",
                "tasks": ["grounding"], "seed": 0, "warnings": [], "sources": sources, "issues": issues,
                "videos": [{"video_id": v, "source": "src_v2.zip" if v == "v2" else "src.zip"} for v in videos]}
        (self.root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
        return self.root


def _clean(builder: Builder, video: str, planted: bool) -> None:
    """Ten frames, a car moving right (top) and a person moving right (bottom), never touching."""
    for k in range(10):
        car = _rect(10 + 2 * k, 10, 34 + 2 * k, 26)
        person = _rect(70 + 2 * k, 50, 82 + 2 * k, 72)
        if planted and video == "v1" and k == 6:
            car = _rect(4, 16, 64, 20)  # the mask collapses to a strip for one frame
        if planted and video == "v2" and k == 8:
            person = _rect(80, 39, 104, 83)  # area x4 for one frame
        builder.frame(video, 5 * k, [(_obj(0, "car", car), RED), (_obj(1, "person", person), BLUE)])


def _training_files(root: Path, planted: bool) -> None:
    turn = [{"from": "human", "value": "<image>\nfind"}, {"from": "gpt", "value": "[]"}]
    bad = [{"from": "human", "value": "<image>\n<image>\nfind"}, {"from": "gpt", "value": "[]"}]
    rows = [{"id": "a", "image": "x.png", "conversations": turn},
            {"id": "b", "image": "y.png", "conversations": bad if planted else turn}]
    (root / "llava.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "sharegpt.json").write_text(json.dumps([{"conversations": turn, "images": ["x.png"]}]), encoding="utf-8")
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find"}]}
    double = {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "find"}]}
    lines = [{"id": "m1", "messages": [message], "images": ["x.png"]},
             {"id": "m2", "messages": [double if planted else message], "images": ["x.png"]}]
    (root / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def build_clean(root: Path) -> Path:
    builder = Builder(root)
    _clean(builder, "v1", False)
    _clean(builder, "v2", False)
    _training_files(root, False)
    return builder.finish([{"path": "src.zip", "fps_claimed": 24.0, "fps_video": 24.0}], [])


def build_planted(root: Path) -> tuple[Path, dict[str, set[str]]]:
    """The clean data plus one defect per rule; returns the record ids each rule must name."""
    b = Builder(root)
    _clean(b, "v1", True)
    _clean(b, "v2", True)
    tint = b.records[15]  # v2:000025, car at x 20..44
    overlay_image = np.asarray(Image.open(root / tint.image)).copy()
    import cv2

    car = _rect(20, 10, 44, 26)
    overlay_image[car > 0] = np.clip(overlay_image[car > 0] + np.array([0, 76, 0]), 0, 255)
    contours, _ = cv2.findContours(car, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(overlay_image, contours, -1, (0, 255, 0), 1)
    Image.fromarray(overlay_image).save(root / tint.image)
    (root / b.records[4].image).unlink()  # v1:000020 has no image any more
    # duplicates: a byte copy of v1:000000 and a slightly brighter v1:000005
    dup0 = b.frame("dup", 0, [(o, RED) for o in b.records[0].objects])
    shutil.copyfile(root / b.records[0].image, root / dup0.image)
    brighter = np.clip(np.asarray(Image.open(root / b.records[1].image)).astype(int) + 3, 0, 255).astype(np.uint8)
    b.frame("dup", 5, [(o, RED) for o in b.records[1].objects], image=brighter)
    ok = _rect(50, 30, 80, 50)
    defects = [
        ObjectAnn(100, "car", [50, 30, 80, 50], 600, None),  # no mask
        ObjectAnn(101, "car", [50, 30, 80, 50], 600, {"size": [H, W], "counts": "zz!!"}),
        _obj(102, "car", _rect(10, 10, 30, 30, 48, 64)),  # 64x48 mask on a 128x96 frame
        ObjectAnn(103, "car", [50, 30, 80, 50], 0, encode_rle(np.zeros((H, W), np.uint8))),
        _obj(104, "car", _rect(60, 40, 63, 43)),  # 9 px
        _obj(105, "car", ok, bbox=[100, 80, 140, 100]),  # box leaves the image
        _obj(106, "car", ok, bbox=[5, 60, 30, 90]),  # box elsewhere than the mask
    ]
    for k, obj in enumerate(defects):
        b.frame("defects", 5 * k, [(obj, RED)])
    b.frame("defects", 35, [])  # an annotated frame without objects
    small = b.frame("defects", 40, [(_obj(108, "car", ok), RED)])
    Image.open(root / small.image).resize((100, 80)).save(root / small.image)
    speck = ok.copy()
    speck[80:82, 120:122] = 1  # 4 stray pixels far from the car: the box grows from [50, 30, 80, 50] to x 122, y 82
    b.frame("defects", 45, [(_obj(109, "car", speck), RED)])
    b.frame("rare", 0, [(_obj(200, "bicycle", ok), RED)])
    b.frame("labels", 0, [(_obj(201, "Car ", ok), RED)])
    b.frame("labels", 5, [(_obj(202, "object_7", ok), RED)])
    _training_files(root, True)
    issue = {"source": "src_v2.zip", "object_id": None, "severity": "warning"}
    b.finish([{"path": "src.zip", "fps_claimed": 24.0, "fps_video": 24.0},
              {"path": "src_v2.zip", "fps_claimed": 30.0, "fps_video": 24.0}],
             [{**issue, "rule": "missing_annotations", "video_id": "v2", "frame_index": 50, "message": "no entry"},
              {**issue, "rule": "invalid_rle", "severity": "error", "video_id": "defects", "frame_index": 100,
               "object_id": 77, "message": "bad runs; object skipped"},
              {**issue, "rule": "overlay_frames", "video_id": "v2", "frame_index": 30, "message": "overlay PNG"}])
    with open(root / "records.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
        handle.write('{"id": "bad", "video_id": "v1"}\n')
    n = len(b.records)
    v2 = {r.id for r in b.records if r.video_id == "v2"}
    expected = {
        "invalid_record": {f"records.jsonl:{n + 1}", f"records.jsonl:{n + 2}"},
        "missing_annotations": {"v1:000020", "v2@50", "defects:000000", "defects:000035"},
        "invalid_rle": {"defects:000005", "defects@100"},
        "mask_size_mismatch": {"defects:000010", "defects:000040"},
        "empty_mask": {"defects:000015"},
        "tiny_mask": {"defects:000020"},
        "mask_fragments": {"defects:000045"},
        "bbox_out_of_bounds": {"defects:000025", "defects:000030"},
        "duplicate_frames": {"v1:000000", "dup:000000", "v1:000005", "dup:000005"},
        "class_imbalance": {"rare:000000", "labels:000000", "labels:000005"},
        "unlabeled_objects": {"labels:000005"},
        "label_near_duplicates": {"labels:000000"},
        "overlay_frames": {"v2:000025", "v2:000030"},
        "fps_mismatch": v2,
        "temporal_flicker": {"v1:000030", "v2:000040"},
        "placeholder_mismatch": {"llava.json#b", "messages.jsonl#m2"},
    }
    return root, expected


def _records_by_rule(report, severities=("error", "warning", "info")) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in report.findings:
        if finding.severity in severities:
            found.setdefault(finding.rule, set()).update(finding.records)
    return found


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    return build_planted(tmp_path_factory.mktemp("planted") / "ds")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clean(tmp_path_factory.mktemp("clean") / "ds")


def test_clean_dataset_has_no_warnings_or_errors(clean: Path) -> None:
    report = run_rules(clean)
    loud = [(f.rule, f.message) for f in report.findings if f.severity != "info"]
    assert loud == []
    assert report.passed and report.summary["errors"] == 0
    assert [f.rule for f in report.findings] == ["image_token_budget"]  # skipped: no family chosen
    assert report.stats["frames"] == 20 and report.stats["labels"] == {"car": 10 * 2, "person": 10 * 2}


def test_each_planted_defect_fires_its_rule_exactly_there(planted: tuple[Path, dict[str, set[str]]]) -> None:
    root, expected = planted
    report = run_rules(root)
    found = _records_by_rule(report)
    for rule_id, records in expected.items():
        assert found.get(rule_id) == records, rule_id
    assert set(found) - set(expected) == {"image_token_budget"}
    assert set(expected) | {"image_token_budget"} == set(RULES) | {"invalid_record"}
    assert not report.passed


def test_planted_severities_and_recommendations(planted: tuple[Path, dict[str, set[str]]]) -> None:
    report = run_rules(planted[0])
    by = {(f.rule, f.severity) for f in report.findings}
    assert ("missing_annotations", "error") in by  # the missing image
    assert ("missing_annotations", "info") in by  # the frame without objects
    assert ("overlay_frames", "error") in by  # the reader's issue: the frames still are overlays
    assert ("overlay_frames", "warning") in by  # one frame of many looks like an overlay
    imbalance = next(f for f in report.findings if f.rule == "class_imbalance")
    assert "'bicycle' (1)" in imbalance.recommendation and "oversample" in imbalance.recommendation
    assert all(f.recommendation for f in report.findings)
    assert report.summary["errors"] == sum(f.severity == "error" for f in report.findings)


def test_stats_hold_area_density_and_temporal_metrics(clean: Path) -> None:
    stats = run_rules(clean).stats
    assert stats["mask_area"]["car"]["median"] == 24 * 16
    assert stats["mask_area"]["person"]["mean_fraction"] == pytest.approx(12 * 22 / (W * H), abs=1e-6)
    assert stats["density"]["objects_per_frame"] == {"mean": 2.0, "median": 2.0, "min": 2, "max": 2}
    tracks = {(o["video_id"], o["object_id"]): o for o in stats["temporal"]["objects"]}
    assert len(tracks) == 4 and tracks["v1", 0]["frames"] == 10
    assert tracks["v1", 0]["min_iou"] == pytest.approx(22 / 26, abs=1e-3)  # 24 px wide, moving 2 px


def test_image_token_budget_with_the_registry(planted: tuple[Path, dict[str, set[str]]]) -> None:
    registry = pytest.importorskip("pipeline.registry")
    spec = registry.get_spec("tiny-smolvlm")
    limit = spec.vision_tokens(W, H) + 40 + 25 + 1  # one object fits, two do not
    report = run_rules(planted[0], {"image_token_budget": {"model": "tiny-smolvlm", "max_length": limit}})
    budget = [f for f in report.findings if f.rule == "image_token_budget"]
    assert len(budget) == 1 and budget[0].severity == "warning"
    lines = (planted[0] / "records.jsonl").read_text().splitlines()[:-2]
    two = {json.loads(line)["id"] for line in lines if len(json.loads(line)["objects"]) >= 2}
    assert set(budget[0].records) == two and two
    unknown = run_rules(planted[0], {"image_token_budget": {"model": "no-such-model"}})
    skipped = [f for f in unknown.findings if f.rule == "image_token_budget"]
    assert [f.severity for f in skipped] == ["info"] and "not in the registry" in skipped[0].message


def test_config_overrides_and_errors(clean: Path) -> None:
    report = run_rules(clean, {"tiny_mask": {"min_area_px": 10_000}, "image_token_budget": {"severity": "off"}})
    tiny = [f for f in report.findings if f.rule == "tiny_mask"]
    assert len(tiny) == 1 and len(tiny[0].records) == 20
    assert not any(f.rule == "image_token_budget" for f in report.findings)
    with pytest.raises(UserError, match="unknown quality rule 'nope'"):
        load_config({"nope": {}})
    with pytest.raises(UserError, match="has no setting 'max'"):
        load_config({"tiny_mask": {"max": 1}})
    with pytest.raises(UserError, match="severity must be"):
        load_config({"tiny_mask": {"severity": "fatal"}})
    assert set(DEFAULT_CONFIG) == set(RULES) | {"invalid_record"}


def test_rle_check_matches_pycocotools() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        mask = (rng.random((23, 41)) > 0.6).astype(np.uint8)
        problem, runs = rle_problem(encode_rle(mask))
        assert problem == "" and sum(runs[1::2]) == mask.sum()
    assert "malformed" in rle_problem({"size": [4, 4], "counts": "zz!!"})[0]
    assert "cover" in rle_problem({"size": [4, 4], "counts": [3, 2]})[0]
    assert "size" in rle_problem({"size": [4], "counts": [16]})[0]


def test_report_files_render_and_parse(planted: tuple[Path, dict[str, set[str]]], tmp_path: Path) -> None:
    report = validate(planted[0], tmp_path / "report")
    out = tmp_path / "report"
    data = json.loads((out / "report.json").read_text())
    assert set(data) == {"summary", "findings", "stats"}
    assert {"errors", "warnings", "infos", "passed"} <= set(data["summary"]) and data["summary"]["passed"] is False
    for finding in data["findings"]:
        assert {"rule", "severity", "message", "records", "recommendation"} <= set(finding)
        assert finding["severity"] in ("error", "warning", "info") and isinstance(finding["records"], list)
    assert {"mask_area", "density", "temporal", "labels"} <= set(data["stats"])
    md = (out / "report.md").read_text()
    assert md.index("## Errors") < md.index("## Warnings") < md.index("## Info")
    assert "`invalid_rle`" in md and md.count("**Fix:**") == len(data["findings"])
    for stem in ("class_distribution", "mask_area", "objects_per_frame", "visibility_timeline"):
        html = (out / f"{stem}.html").read_text()
        assert 'src="plotly.min.js"' in html and "cdn.plot.ly" not in html
        with Image.open(out / f"{stem}.png") as png:
            assert png.size[0] >= 600 and len(png.getcolors(1 << 20) or []) > 20
        assert f"({stem}.html)" in md
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert Path(report.paths["md"]) == (out / "report.md").resolve()


def test_cli_exit_codes(clean: Path, planted: tuple[Path, dict[str, set[str]]], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(clean), "--out", str(tmp_path / "a")]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["validate", str(planted[0]), "--out", str(tmp_path / "b"), "--family", "tiny-smolvlm"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "input not found" in err and err.count("\n") == 1
    broken = tmp_path / "broken"
    shutil.copytree(clean, broken)
    (broken / "dataset.json").write_text("{oops", encoding="utf-8")
    assert main(["validate", str(broken), "--out", str(tmp_path / "d")]) == 2
    assert "dataset.json" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    assert main(["validate", str(clean), "--out", str(tmp_path / "a")]) == 2  # existing report, no --overwrite
    assert main(["validate", str(clean), "--out", str(tmp_path / "a"), "--overwrite"]) == 0


def _demo_zip(sample_dir: Path) -> Path:
    zips = sorted(sample_dir.glob("sam2_export_*.zip"))
    if not zips:
        pytest.skip("the sample has no SAM 2 demo export")
    return zips[0]


def test_sample_export_validates_end_to_end(sample_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pipeline.ingest")
    export = _demo_zip(sample_dir)
    report = validate(export, tmp_path / "report", family="tiny-smolvlm")
    rules = {f.rule: f for f in report.findings}
    assert (tmp_path / "report" / "report.md").is_file() and not (tmp_path / "report" / ".converted").exists()
    assert rules["fps_mismatch"].severity == "warning"  # the demo exporter claims 30 fps for a 24 fps video
    assert "overlay_frames" not in rules  # clean frames were decoded from the video beside the export
    assert report.stats["frames"] > 5 and report.passed
    overlay_only = tmp_path / "alone" / export.name
    overlay_only.parent.mkdir()
    shutil.copyfile(export, overlay_only)
    report = validate(overlay_only, tmp_path / "overlay", allow_overlay_frames=True)
    pixels = [f for f in report.findings if f.rule == "overlay_frames" and "look like" in f.message]
    assert pixels and pixels[0].severity == "error" and len(pixels[0].records) >= 0.5 * report.stats["frames"] - 2
