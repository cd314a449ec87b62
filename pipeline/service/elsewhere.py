"""The app facade: scoring models trained elsewhere (any Hugging Face VLM folder in STUDIO_HOME/models)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..home import home_dir

if TYPE_CHECKING:
    pass
from .common import check_name, dataset_dir
from .runs import _eval_view, _run_dir, public_note


# -- models trained elsewhere: any Hugging Face VLM folder in STUDIO_HOME/models -----------------------------------
def model_folder_choices() -> list[str]:
    """Names of the model folders (with a config.json) in STUDIO_HOME/models."""
    root = home_dir("models")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())


def import_model_zip(path: str | Path, name: str | None = None) -> str:
    """Unpack an uploaded ZIP of a model folder (config.json at its top or in its one folder) into
    STUDIO_HOME/models/<name>; returns the name."""
    import shutil

    from ..safezip import extracted_zip

    name = check_name(name or Path(path).stem, "model")
    dest = home_dir("models") / name
    if dest.exists():
        raise UserError(f"a model named {name!r} already exists in the models folder")
    with extracted_zip(path, tmp_dir=home_dir("cache")) as folder:
        tops = [p for p in folder.iterdir() if not p.name.startswith(".")]
        top = tops[0] if len(tops) == 1 and tops[0].is_dir() else folder
        if not (top / "config.json").is_file():
            raise UserError("the ZIP holds no model folder (no config.json at its top)", path)
        shutil.move(str(top), str(dest))
    return name


def evaluate_folder(model_name: str, dataset: str, split_name: str = "test", limit: int | None = 32,
                    convention: str | None = None) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """Score STUDIO_HOME/models/<model_name> (trained anywhere) on a dataset split; convention None: inferred."""
    from ..evaluate import evaluate_model

    folder = home_dir("models") / check_name(model_name, "model")
    if not (folder / "config.json").is_file():
        raise UserError(f"no model folder named {model_name!r} (with a config.json) in the models folder")
    result = evaluate_model(str(folder), dataset=dataset_dir(dataset), split=split_name or "test",
                            limit=int(limit) if limit else None, batch_size=8, convention=convention or None)
    return _eval_view(result, {"model": model_name, "dataset": dataset, "split": split_name})








def export(run_id: str, mode: str = "adapter", checkpoint: str = "best", progress: bool = False) -> dict[str, Any]:
    """Export a run into STUDIO_HOME/exports/<run id>-<mode> (+ .zip beside it); replaces an earlier export."""
    return export_folder(_run_dir((run_id or "").strip()), mode, checkpoint, progress)


def export_dir(run: Path, mode: str) -> Path:
    """STUDIO_HOME/exports/<run folder name>-<mode>."""
    return home_dir("exports") / check_name(f"{run.name}-{mode}", "export name")


def export_folder(run: Path, mode: str = "adapter", checkpoint: str = "best", progress: bool = False,
                  ) -> dict[str, Any]:
    """`export` of a run folder."""
    from ..export import export_run

    out = export_dir(run, mode)
    result = export_run(run, out, mode=mode, checkpoint=checkpoint or "best", overwrite=True, progress=progress)
    card = result.out_dir / "README.md"
    return {"export": out.name, "mode": result.mode, "source": result.source, "step": result.step,
            "files": result.files,
            "notes": [public_note(str(n)) for n in result.notes or []],
            "parity": (result.parity or {}).get("all_match"), "zip": Path(result.zip_path).name,
            "zip_path": str(result.zip_path), "card": card.read_text(encoding="utf-8") if card.is_file() else ""}


def saved_export(run_id: str) -> dict[str, Any] | None:
    """The newest export of a run still on disk: {"export", "mode", "zip", "zip_path", "card"}; None."""
    run = _run_dir(run_id)
    found = [home_dir("exports") / f"{run.name}-{mode}" for mode in ("adapter", "merged")]
    found = [f for f in found if (f / "README.md").is_file()]
    if not found:
        return None
    folder = max(found, key=lambda f: f.stat().st_mtime)
    archive = folder.with_suffix(".zip") if folder.with_suffix(".zip").is_file() else None
    return {"export": folder.name, "mode": folder.name.rsplit("-", 1)[-1], "zip": archive.name if archive else None,
            "zip_path": str(archive) if archive else None, "card": (folder / "README.md").read_text(encoding="utf-8")}




__all__ = [
    'evaluate_folder', 'export', 'export_dir', 'export_folder', 'import_model_zip', 'model_folder_choices',
    'saved_export',
]
