"""`python -m pipeline export RUN --mode adapter|merged --out DIR`: export a run (+ DIR.zip beside DIR)."""

from __future__ import annotations

import argparse
import sys

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
    print(f"zip: {result.zip_path}")
    return 0
