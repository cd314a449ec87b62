"""Experiments: filters, sorting, config queries, compare (diff + plotly curves), notes, tags, delete; the CLIs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline import experiments as ex
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.jobs import open_store
from pipeline.jobs.store import Experiment, JobStore


def write_run(home: Path, run_id: str, losses: list[float]) -> Path:
    run = home / "runs" / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("training: {}\n")
    lines = [{"seq": 1, "event": "start", "step": 0}]
    for step, loss in enumerate(losses, start=1):
        lines.append({"seq": len(lines) + 1, "event": "log", "step": step, "loss": loss, "lr": 0.001})
    lines.append({"seq": len(lines) + 1, "event": "eval", "step": len(losses), "eval_loss": losses[-1] + 0.1})
    lines.append({"seq": len(lines) + 1, "event": "end", "status": "succeeded", "step": len(losses)})
    (run / "progress.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    store = open_store(home)
    rows = [("a", "tiny-smolvlm", 8, "succeeded", [1.0, 0.6], 0.0), ("b", "tiny-smolvlm", 16, "failed", [1.2], 1.0),
            ("c", "tiny-llava", 16, "succeeded", [0.9, 0.5, 0.3], 2.0)]
    for run_id, model, rank, status, losses, offset in rows:
        run = write_run(home, run_id, losses)
        store.add_experiment(Experiment(
            run_id=run_id, name=f"exp-{run_id}", created_at=1_700_000_000 + offset, run_dir=str(run), model=model,
            status=status, config={"model": {"name": model}, "lora": {"r": rank, "alpha": 32},
                                   "training": {"output_dir": str(run), "learning_rate": 2e-4}},
            summary={"final_loss": losses[-1], "steps": len(losses)}))
    return store


def ids(rows: list[Experiment]) -> list[str]:
    return [r.run_id for r in rows]


def test_list_filters_and_sorts(seeded: JobStore) -> None:
    assert ids(ex.list_experiments(store=seeded)) == ["c", "b", "a"]  # newest first
    assert ids(ex.list_experiments(status="succeeded", store=seeded)) == ["c", "a"]
    assert ids(ex.list_experiments(model="tiny-smolvlm", store=seeded)) == ["b", "a"]
    assert ids(ex.list_experiments(where=["lora.r=16"], store=seeded)) == ["c", "b"]
    assert ids(ex.list_experiments(where=["lora.r>=16", "model.name!=tiny-llava"], store=seeded)) == ["b"]
    assert ids(ex.list_experiments(where=["final_loss<0.7"], store=seeded)) == ["c", "a"]
    assert ids(ex.list_experiments(sort="final_loss", store=seeded)) == ["c", "a", "b"]
    assert ids(ex.list_experiments(sort="final_loss", descending=True, limit=2, store=seeded)) == ["b", "a"]
    assert ids(ex.list_experiments(sort="best_metric", store=seeded)) == ["c", "b", "a"]  # all missing: stable
    assert ids(ex.list_experiments(sort="created", descending=False, store=seeded)) == ["a", "b", "c"]
    with pytest.raises(UserError, match="cannot read condition"):
        ex.list_experiments(where=["lora.r"], store=seeded)


def test_notes_and_tags(seeded: JobStore) -> None:
    ex.set_note("a", "first try", store=seeded)
    assert ex.set_note("a", "lr too high", append=True, store=seeded).notes == "first try\nlr too high"
    ex.tag("a", "baseline", store=seeded)
    ex.tag("c", "baseline", store=seeded)
    assert ex.tag("a", "keep", store=seeded).tags == ["baseline", "keep"]
    assert ids(ex.list_experiments(tag="baseline", store=seeded)) == ["c", "a"]
    assert ex.tag("a", "baseline", remove=True, store=seeded).tags == ["keep"]


def test_compare_gives_a_config_diff_and_overlaid_curves(seeded: JobStore, tmp_path: Path) -> None:
    comparison = ex.compare(["a", "c"], store=seeded)
    diff = {row["key"]: row["values"] for row in comparison.diff}
    assert diff == {"lora.r": {"a": 8, "c": 16}, "model.name": {"a": "tiny-smolvlm", "c": "tiny-llava"}}
    assert comparison.curves["loss"] == {"a": [(1, 1.0), (2, 0.6)], "c": [(1, 0.9), (2, 0.5), (3, 0.3)]}
    assert comparison.curves["eval_loss"]["c"] == [(3, pytest.approx(0.4))]
    table = comparison.table()
    assert "| lora.r | 8 | 16 |" in table and "| final_loss | 0.6 | 0.3 |" in table
    figures = ex.comparison_figures(comparison)
    assert set(figures) == {"loss", "eval_loss", "lr"}
    loss = figures["loss"]
    assert [t.name for t in loss.data] == ["exp-a", "exp-c"] and list(loss.data[1].y) == [0.9, 0.5, 0.3]
    assert loss.layout.title.text == "loss"
    page = ex.write_comparison_html(comparison, tmp_path / "cmp.html").read_text()
    assert "lora.r" in page and page.count("plotly-graph-div") >= 3
    with pytest.raises(UserError, match="at least two"):
        ex.compare(["a"], store=seeded)


def test_delete_refuses_a_running_job_then_removes_rows_and_folder(seeded: JobStore) -> None:
    exp = seeded.get_experiment("b")
    job = seeded.add_job("b", "train", ["x"], "/", exp.run_dir)
    seeded.transition(job.id, "queued", "running")
    with pytest.raises(UserError, match="is running; cancel it first"):
        ex.delete_experiment("b", store=seeded)
    assert Path(exp.run_dir).is_dir() and seeded.get_job(job.id).status == "running"
    seeded.transition(job.id, "running", "cancelled")
    assert ex.delete_experiment("b", store=seeded) == Path(exp.run_dir)
    assert not Path(exp.run_dir).exists() and ids(seeded.list_experiments()) == ["a", "c"]
    with pytest.raises(UserError, match="no job"):
        seeded.get_job(job.id)


def test_delete_never_removes_a_folder_that_is_not_a_run(seeded: JobStore, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    seeded.add_experiment(Experiment(run_id="odd", name="odd", created_at=time.time(), run_dir=str(precious)))
    assert ex.delete_experiment("odd", store=seeded) is None
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_experiments_cli(seeded: JobStore, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["experiments", "list", "--json", "--where", "lora.r=16", "--sort", "final_loss"]) == 0
    assert [row["run_id"] for row in json.loads(capsys.readouterr().out)] == ["c", "b"]
    assert main(["experiments", "note", "a", "baseline run"]) == 0
    assert main(["experiments", "tag", "a", "keep"]) == 0
    assert main(["experiments", "show", "a", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["notes"], shown["tags"]) == ("baseline run", ["keep"])
    assert main(["experiments", "compare", "a", "c", "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "| model.name | tiny-smolvlm | tiny-llava |" in out and (tmp_path / "c.html").is_file()
    seeded.add_job("c", "train", ["x"], "/", seeded.get_experiment("c").run_dir)
    assert main(["experiments", "delete", "c"]) == 2  # a queued job is active too
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is queued; cancel it first" in err
    assert main(["experiments", "delete", "a"]) == 0
    assert "deleted a and" in capsys.readouterr().out and ids(seeded.list_experiments()) == ["b", "c"]
