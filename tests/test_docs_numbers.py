"""Numbers in the docs that come from code are read back from the code, so they cannot drift: the built-in sample's
size, the presets' step counts and batch sizes, the sample command line, and the list of app endpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def words_to_int(text: str) -> int:
    return int(text.replace(",", ""))


def doc(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_user_guide_states_the_built_in_sample_size() -> None:
    from pipeline.service import sample_options

    options = sample_options()
    text = " ".join(doc("docs/USER_GUIDE.md").split())
    match = re.search(r"the offline demo's data \(`pipeline/demo.py`\), ([\d,]+) short SAM 2 demo-export sessions .*?"
                      r"([\d,]+) annotated frames", text)
    assert match, "USER_GUIDE.md no longer states the built-in sample's size"
    assert words_to_int(match.group(1)) == options["videos"]
    assert words_to_int(match.group(2)) == options["videos"] * options["frames"]


@pytest.mark.parametrize("name", ["README.md", "docs/USER_GUIDE.md", "docs/SAMPLE_DATA.md"])
def test_documented_sample_commands_match_the_demo_sample(name: str) -> None:
    from pipeline.demo import SAMPLE_OPTIONS

    commands = re.findall(r"python -m pipeline sample --out \S+ ([^\n`#]*)", doc(name))
    flags = {"--frames": "frames", "--videos": "videos", "--every": "export_every", "--objects": "objects"}
    checked = 0
    for command in commands:
        if "--videos 256" not in command and "--size 64x64" not in command:
            continue  # other examples (a bigger or smaller sample) are not the demo's
        values = dict(re.findall(r"(--[a-z]+) (\S+)", command))
        for flag, key in flags.items():
            if flag in values:
                assert int(values[flag]) == SAMPLE_OPTIONS[key], f"{name}: {flag} {values[flag]}"
        if "--size" in values:
            assert values["--size"] == f"{SAMPLE_OPTIONS['width']}x{SAMPLE_OPTIONS['height']}"
        checked += 1
    if name == "README.md":
        match = re.search(r"sample \(([\d,]+) SAM 2 demo exports, (\d+) frames each\)", doc(name))
        assert match and words_to_int(match.group(1)) == SAMPLE_OPTIONS["videos"]
        assert int(match.group(2)) == SAMPLE_OPTIONS["frames"]
    else:
        assert checked, f"{name} shows no command for the demo's sample"


def test_demo_doc_states_the_sample_defaults() -> None:
    from pipeline.demo import SAMPLE_OPTIONS

    pattern = r"\| `--frames N` / `--videos K` \| (\d+) / (\d+) \(`pipeline.demo.SAMPLE_OPTIONS`: (\d+)x(\d+) frames"
    match = re.search(pattern, doc("docs/DEMO.md"))
    assert match, "DEMO.md no longer states the sample defaults"
    assert [int(v) for v in match.groups()] == [SAMPLE_OPTIONS[k] for k in ("frames", "videos", "width", "height")]


def preset_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| [^|]+ \| ([^|]+) \|", doc("docs/TRAINING.md"), re.M)
    return dict(rows)


def test_training_doc_lists_every_preset_with_its_steps_and_batch() -> None:
    from pipeline.presets import BUILTIN as PRESETS

    rows = preset_rows()
    assert set(rows) == set(PRESETS)
    for name, settings in rows.items():
        training: dict[str, Any] = PRESETS[name].get("training", {})
        if "max_steps" in training and (steps := re.search(r"(\d+) steps", settings)):
            assert int(steps.group(1)) == training["max_steps"], name
        if epochs := re.search(r"(\d+) epochs", settings):
            assert int(epochs.group(1)) == training["epochs"], name
        if batch := re.search(r"batch (\d+)(?: x (\d+))?", settings):
            assert int(batch.group(1)) == training["batch_size"], name
            if batch.group(2):
                assert int(batch.group(2)) == training["grad_accum"], name
        if lr := re.search(r"lr ([\d.e-]+)", settings):
            assert float(lr.group(1)) == training["learning_rate"], name


def documented_endpoints() -> set[str]:
    text = doc("docs/API.md")
    names = set(re.findall(r"^#{3} (.+)$", text, re.M))
    found = {n for heading in names for n in re.findall(r"`(/[a-z_]+)`", heading)}
    found |= set(re.findall(r"^- `(/[a-z_]+)\(", text, re.M))
    return found


def test_api_doc_lists_exactly_the_app_endpoints() -> None:
    from studio_app.ui import build_ui

    demo = build_ui()
    public = {f"/{fn.api_name}" for fn in demo.fns.values() if fn.api_name and fn.api_visibility == "public"}
    assert documented_endpoints() == public
