"""The app's facade: plain functions the Gradio handlers call (no gradio here), returning JSON-able dicts, paths,
PIL images and plotly figures. Everything is addressed by name inside STUDIO_HOME (datasets/<name>, runs by run id,
exports/<name>), so a remote caller can never point the studio at an arbitrary path. A thin facade, one module per
part of the app (common, data, training, runs, elsewhere, experiments); uploads live in uploads.py and drawing in
gallery.py. This package re-exports what the handlers call.

    from pipeline import service
    service.convert_inputs([], "demo", sample=True)           # built-in sample -> STUDIO_HOME/datasets/demo
    service.split("demo", "random", "0.8,0.1,0.1", 42)
    job = service.start_training("demo", preset="quick_test", max_steps=3)
    for view in service.watch_job(job["job_id"]): print(view.status, view.step, view.total_steps)
"""

from __future__ import annotations

from ..gallery import PALETTE, draw_objects  # noqa: F401
from ..home import home_dir, studio_home  # noqa: F401
from ..uploads import (  # noqa: F401
    SAMPLE_NAME,
    SAMPLE_OPTIONS,
    Inputs,
    detect_inputs,
    ensure_sample,
    labels_from_rows,
    sample_inputs,
    sample_options,
    staged_inputs,
)
from .common import *  # noqa: F403
from .common import _BACKENDS, _HARDWARE, _HARDWARE_LOCK, _LOCK, _MODE, _NAME, _gallery, _plain, _preset_of, _round  # noqa: F401
from .data import *  # noqa: F403
from .data import _report_view  # noqa: F401
from .elsewhere import *  # noqa: F403
from .experiments import *  # noqa: F403
from .experiments import _check_conditions  # noqa: F401
from .runs import *  # noqa: F403
from .runs import _eval_view, _run_dir, _submit  # noqa: F401
from .training import *  # noqa: F403
from .training import _AVAILABLE, _memory_view, _split_warning  # noqa: F401
