"""`python -m pipeline split DATASET --strategy random|stratified|temporal --ratios 0.8,0.1,0.1 --seed 42`."""

from __future__ import annotations

import argparse

HELP = "leakage-free train/val/test splits of a converted dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the split options; with --config the saved values are used unless given here too."""
    parser.add_argument("dataset", metavar="DATASET", help="a converted dataset folder")
    parser.add_argument("--strategy", choices=("random", "stratified", "temporal"),
                        help="random (seeded), stratified (label shares kept), temporal (whole videos; one video: "
                             "time blocks) (default: temporal)")
    parser.add_argument("--ratios", metavar="T,V,T", help="train,val,test fractions summing to 1 (default 0.8,0.1,0.1)")
    parser.add_argument("--seed", type=int, help="random seed (default 42)")
    parser.add_argument("--guard", type=int, metavar="N",
                        help="temporal, single video: frame indices left out between blocks (default: 2 steps)")
    parser.add_argument("--dup-distance", type=int, metavar="BITS",
                        help="perceptual-hash distance under which frames count as near-duplicates (default 4)")
    parser.add_argument("--config", metavar="FILE", help="reproduce a saved split (DATASET/split.yaml)")


def run(args: argparse.Namespace) -> int:
    """Split, write the files, print counts, label shares and notes."""
    from ..split import DEFAULT_DUP_DISTANCE, SPLITS, load_split_config, split_dataset

    config = load_split_config(args.config) if args.config else {}
    given = {"strategy": args.strategy, "ratios": args.ratios, "seed": args.seed, "guard": args.guard,
             "dup_distance": args.dup_distance}
    config.update({key: value for key, value in given.items() if value is not None})
    defaults = {"strategy": "temporal", "ratios": "0.8,0.1,0.1", "seed": 42, "dup_distance": DEFAULT_DUP_DISTANCE}
    result = split_dataset(args.dataset, config={**defaults, **config})
    guard = f", guard {result.guard} frames" if result.guard is not None else ""
    print(f"split: {result.strategy}, ratios {'/'.join(f'{r:g}' for r in result.ratios)}, seed {result.seed}{guard}")
    for split in SPLITS:
        videos = ", ".join(result.videos[split][:6]) + (" ..." if len(result.videos[split]) > 6 else "")
        print(f"  {split:<6} {result.counts[split]:>6} frames {result.objects[split]:>7} objects   videos: {videos}")
    if result.counts["excluded"]:
        print(f"  left out {result.counts['excluded']} frame(s) (guard gaps)")
    labels = list(result.label_shares["overall"])
    if labels:
        print("label share (% of objects): " + "  ".join(f"{s}" for s in ("overall", *SPLITS)))
        for label in labels:
            row = "  ".join(f"{100 * result.label_shares[s].get(label, 0.0):5.1f}" for s in ("overall", *SPLITS))
            print(f"  {label[:24]:<24} {row}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.paths.get('config')}, splits/{{train,val,test}}.jsonl and the training formats per split")
    return 0
