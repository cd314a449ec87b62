"""`python -m pipeline export RUN --mode adapter|merged --out DIR`: export a run (+ DIR.zip beside DIR)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "export an adapter or merged model with its model card"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `export` verb."""
    parser.add_argument("--submit", action="store_true",
                        help="queue it as a job (local scheduler, or a `preprocessing` worker) and print its id")
    parser.add_argument("run", metavar="RUN", help="run folder written by `python -m pipeline train`")
    parser.add_argument("--mode", choices=["adapter", "merged"], default="adapter",
                        help="adapter: LoRA weights for the base model; merged: one complete model (default adapter)")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|N",
                        help="which weights: the best evaluated checkpoint, the last ones, or checkpoint-N "
                             "(default best; the last weights when the run had no evaluation)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new folder to write; DIR.zip is written beside it")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="merged: dtype of the reloaded base (auto: float32 on CPU, 16-bit on GPU and for QLoRA)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="merged: where to merge (default: cuda if present)")
    parser.add_argument("--parity-samples", type=int, default=3, metavar="N",
                        help="merged: validation frames to compare adapter and merged answers on (default 3; 0: off)")
    parser.add_argument("--repo-id", metavar="USER/NAME", help="Hub repo the card's usage code should load from")
    parser.add_argument("--dataset-id", action="append", default=[], metavar="ID",
                        help="Hub dataset id(s) of the training data, listed in the card (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR and DIR.zip")
    parser.add_argument("--serve-parity", type=int, default=0, metavar="N",
                        help="serve the export and check on N held-out examples that it scores like offline "
                             "evaluation; the verdict goes into the card (default 0: off; docs/SERVING.md)")
    parser.add_argument("--space", nargs="?", const="", default=None, metavar="SPACE_DIR",
                        help="also write a Gradio inference Space for the export (default DIR-space)")


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    if getattr(args, "submit", False):
        from ..steps import print_submitted

        return print_submitted("export", args.raw_argv)
    from ..export import export_run

    result = export_run(args.run, args.out, mode=args.mode, checkpoint=args.checkpoint, dtype=args.dtype,
                        device=args.device, parity_samples=args.parity_samples, repo_id=args.repo_id,
                        datasets=args.dataset_id or None, overwrite=args.overwrite, progress=True)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    step = f" (step {result.step})" if result.step is not None else ""
    print(f"exported {result.mode} from {result.source}{step} to {result.out_dir}")
    print(f"files: {', '.join(result.files)}")
    if result.parity is not None:
        p = result.parity
        verdict = (f"{p['matched']}/{p['samples_checked']} answers identical, max logit diff "
                   f"{p['max_abs_logit_diff']:.2e}" if p.get("checked") else f"not checked ({p.get('reason')})")
        print(f"parity: {verdict}")
    if args.serve_parity > 0:
        _serve_parity(result.out_dir, args.run, args.serve_parity)
    if args.space is not None:
        from ..space import write_space

        space = write_space(result.out_dir, args.space or None, model_ref=args.repo_id, overwrite=args.overwrite)
        print(f"space: {space} (push it with: python -m pipeline push {space} --space USER/NAME)")
    print(f"zip: {result.zip_path}")
    return 0


def _serve_parity(export: Path, run: str, limit: int) -> None:
    from ..errors import UserError
    from ..export import read_run
    from ..serve_parity import check_serving_parity

    dataset = read_run(run).dataset
    if dataset is None:
        raise UserError("--serve-parity needs the run's dataset on this machine")
    p = check_serving_parity(export, dataset, limit=limit)
    print(f"serving parity: {'agree' if p['agree'] else 'DO NOT agree'}: mIoU served {p['miou_served']:.4f} vs "
          f"offline {p['miou_offline']:.4f} on {p['n_served']} {p['split']} examples "
          f"({p['identical_answers']}/{p['n_served']} answers identical)")
