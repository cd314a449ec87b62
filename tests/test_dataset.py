"""pipeline.dataset: opening a converted dataset folder (meta, records, splits, fingerprint) and its one-line errors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers.datasets import make, record

from pipeline import dataset as ds
from pipeline.errors import UserError
from pipeline.records import write_records

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def test_open_reads_metarecords_and_properties(tmp_path: Path) -> None:
    opened = ds.open_dataset(make(tmp_path / "d"))
    assert opened.root == (tmp_path / "d").resolve()
    assert (opened.tasks, opened.seed, opened.convention, opened.max_pixels) == (["grounding"], 3, "qwen2_5_vl",
                                                                                 200_704)
    assert [r.id for r in opened.records()] == [f"v-{i:03d}" for i in range(6)]
    assert opened.split_names() == []
    train, val = opened.train_val()
    assert len(train) == 6 and val == []  # no splits yet: everything trains


def test_splits_and_missing_split_lists_the_others(tmp_path: Path) -> None:
    opened = ds.open_dataset(make(tmp_path / "d", splits=True))
    assert opened.split_names() == ["test", "train", "val"]
    train, val = opened.train_val()
    assert [len(train), len(val)] == [4, 1]
    assert [r.id for r in opened.split("test")] == ["v-005"]
    with pytest.raises(UserError, match=r"no holdout split .*test, train, val"):
        opened.split("holdout")
    with pytest.raises(UserError, match="plain name"):
        opened.split("../records")


@pytest.mark.parametrize("layout", ["empty", "records_only", "meta_only", "a_file"])
def test_not_a_dataset_is_one_clear_line(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "x"
    if layout == "a_file":
        target.write_text("hello")
    else:
        target.mkdir()
        if layout == "records_only":
            write_records([record(0)], target / ds.RECORDS_FILE)
        if layout == "meta_only":
            ds.write_meta(target, {})
    assert not ds.is_dataset(target)
    with pytest.raises(UserError) as err:
        ds.open_dataset(target)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(target.resolve()))
    assert "not a converted dataset" in message and ds.META_FILE in message and ds.RECORDS_FILE in message


def test_broken_meta_and_badrecord_lines(tmp_path: Path) -> None:
    root = make(tmp_path / "d")
    ds.meta_path(root).write_text("[1, 2]")
    with pytest.raises(UserError, match="must hold a JSON object"):
        ds.open_dataset(root)
    ds.meta_path(root).write_text("{nope")
    with pytest.raises(UserError, match="cannot be read as JSON"):
        ds.open_dataset(root)
    ds.write_meta(root, {})
    with open(ds.records_path(root), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "bad", "width": -1}) + "\n")
    opened = ds.open_dataset(root)
    assert opened.max_pixels is None and opened.tasks == ["grounding"]  # defaults of an older dataset.json
    with pytest.raises(UserError, match=r"line 7: .*run validate"):
        opened.records()
    records, bad = opened.scan()  # the quality report's lenient read
    assert len(records) == 6 and bad[0][0] == 7


def test_fingerprint_followsrecords_and_splits(tmp_path: Path) -> None:
    root = make(tmp_path / "d")
    first = ds.fingerprint(root)
    assert first is not None and len(first) == 16 and first == ds.open_dataset(root).fingerprint()
    assert ds.fingerprint(make(tmp_path / "same")) == first  # content, not the folder's name
    ds.splits_dir(root).mkdir()
    write_records([record(0)], ds.split_path(root, "train"))
    assert ds.fingerprint(root) != first
    assert ds.fingerprint(tmp_path / "nothing") is None


def test_jobs_and_train_fingerprints_are_this_one(tmp_path: Path) -> None:
    from pipeline.jobs import dataset_fingerprint as jobs_fp
    from pipeline.train import dataset_fingerprint as train_fp

    root = make(tmp_path / "d", splits=True)
    assert jobs_fp(root) == train_fp(root) == ds.fingerprint(root)


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    # a dict key or a subscript ({"splits": ...}, info["splits"]) names a field of a result, not a file
    keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys if k is not None}
    keys |= {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings | keys}


def test_dataset_file_names_are_spelled_only_in_dataset_py() -> None:
    names = (ds.META_FILE, ds.RECORDS_FILE, ds.SPLITS_DIR, ds.SPLIT_CONFIG)
    offenders = []
    for path in sorted(PIPELINE.rglob("*.py")):
        if path.name == "dataset.py":
            continue
        for text in _string_literals(path):
            if text in names or any(text.startswith(f"{n}/") or text.endswith(f"/{n}") for n in names):
                offenders.append(f"{path.relative_to(PIPELINE)}: {text!r}")
    assert offenders == []
