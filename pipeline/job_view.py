"""What the app shows of a followed job: the view folded from its events, and its progress bar, stats and curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WatchView:
    """What the app shows of a followed job; `to_dict()` is what /watch_job returns."""

    job_id: int
    run_id: str = ""
    status: str = "queued"
    attempt: int = 1
    position: int | None = None
    seq: int = 0
    step: int = 0
    total_steps: int | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    loss: float | None = None
    lr: float | None = None
    eval_loss: float | None = None
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    log_tail: str = ""
    run_dir: str = ""

    def add(self, event: dict[str, Any]) -> None:
        """Fold one event (progress line or status change) into the view."""
        kind = event.get("event")
        if isinstance(event.get("seq"), int):
            self.seq = max(self.seq, event["seq"])
        if kind == "status":
            self.status, self.attempt = event.get("status", self.status), event.get("attempt", self.attempt)
            self.position, self.error = event.get("position"), event.get("error") or self.error
            return
        for key in ("step", "total_steps", "eta_s", "elapsed_s", "samples_per_s", "tokens_per_s"):
            if isinstance(event.get(key), int | float):
                setattr(self, key, event[key])
        if isinstance(event.get("memory"), dict):
            self.memory = event["memory"]
        step = int(event.get("step") or 0)
        for key, name in (("loss", "loss"), ("lr", "lr"), ("eval_loss", "eval_loss")):
            if isinstance(event.get(key), int | float) and kind in ("log", "eval"):
                setattr(self, name, float(event[key]))
                self.curves.setdefault(name, {})[step] = float(event[key])
        for key in ("reward", "eval_miou"):  # GRPO runs: the reward curve and validation mIoU
            if isinstance(event.get(key), int | float) and kind in ("log", "eval"):
                self.curves.setdefault(key, {})[step] = float(event[key])
        if kind == "end" and event.get("status") == "succeeded" and self.total_steps:
            self.step = max(self.step, int(event.get("step") or self.step))
        if kind in ("error", "end") and (event.get("error") or event.get("message")):
            self.error = str(event.get("error") or event.get("message"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able view without the curves (plots carry them)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("curves", "run_dir")}
        data["fraction"] = round(self.step / self.total_steps, 4) if self.total_steps else 0.0
        return data


def progress_html(view: WatchView | None) -> str:
    """The progress bar: step/total, percentage, ETA and status (an HTML <progress> the browser test reads)."""
    import html

    if view is None:
        return "<div id='train-progress'><progress value='0' max='1'></progress> no job followed yet</div>"
    total = view.total_steps or 0
    eta = f" · ETA {_duration(view.eta_s)}" if view.eta_s is not None and view.status == "running" else ""
    queue = f" · queue position {view.position}" if view.status == "queued" and view.position else ""
    pct = f" ({100 * view.step / total:.0f}%)" if total else ""
    error = f"<div class='job-error'>{html.escape(view.error)}</div>" if view.error else ""
    return (f"<div id='train-progress' data-step='{view.step}' data-total='{total}' data-status='{view.status}'>"
            f"<progress value='{view.step}' max='{max(total, 1)}' style='width:100%'></progress>"
            f"<div>job {view.job_id} · <b>{view.status}</b> · step {view.step}/{total or '?'}{pct}{eta}{queue}"
            f"</div>{error}</div>")


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def stats_markdown(view: WatchView) -> str:
    """Throughput, memory and the latest values as one Markdown line."""
    parts = [f"loss **{view.loss:.4f}**" if view.loss is not None else None,
             f"lr {view.lr:.2e}" if view.lr is not None else None,
             f"eval loss {view.eval_loss:.4f}" if view.eval_loss is not None else None,
             f"{view.samples_per_s:.2f} samples/s" if view.samples_per_s else None,
             f"{view.tokens_per_s:.0f} tokens/s" if view.tokens_per_s else None]
    parts += [f"{k.replace('_', ' ')} {v / 2**20:.0f} MiB" for k, v in view.memory.items()
              if isinstance(v, int | float) and v > 2**20]
    return " · ".join(p for p in parts if p) or "waiting for the first log step…"


def curve_figure(view: WatchView, names: Sequence[str], title: str, from_zero: bool = False) -> Any:
    """One line per curve (loss + eval loss, or the learning rate) over the steps."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=sorted(view.curves[n]), y=[view.curves[n][s] for s in sorted(view.curves[n])],
                                mode="lines+markers", name=n) for n in names if view.curves.get(n)])
    fig.update_layout(title=title, xaxis_title="step", height=280, template="plotly_white",
                      margin={"t": 40, "b": 30, "l": 60, "r": 10})
    fig.update_yaxes(rangemode="tozero" if from_zero else "normal", exponentformat="e")
    return fig
