"""Benchmark: `convert` of a generated 1280x720 SAM 2 session against a minimal script doing the same work.

    python bench/convert.py [--quick] [--frames N]

Input: the sample's SAM 2 demo stream (JSONL of COCO RLE per object per frame + its H.264 video, 2-4 objects a
frame). The baseline (below) produces the same clean JPEGs (PyAV decode, PIL quality 95) and the same boxes
(pycocotools RLE -> box) and nothing else; the pipeline also checks every RLE, writes records.jsonl, dataset.json and
the training formats (LLaVA, sharegpt, messages, HF datasets). Each run is its own child process; its peak RSS comes
from os.wait4. The last line printed is `ratio=<pipeline time / baseline time> rss_ratio=<peak RSS at 10x frames /
peak RSS at 1x>` (goals: ratio <= 1.3, rss_ratio <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline(jsonl: Path, video: Path, out: Path) -> None:
    """The minimal script: clean frames at the annotated indices as JPEG q95, one box per visible object."""
    import av
    from PIL import Image  # noqa: F401 - frame.to_image() returns a PIL image
    from pycocotools import mask as mask_utils

    masks = {}
    with open(jsonl, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            masks[record["frame_index"]] = record["results"]
    boxes = {}
    (out / "images").mkdir(parents=True)
    last = max(masks)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index > last:
                break
            if index not in masks:
                continue
            frame.to_image().save(out / "images" / f"{index:06d}.jpg", quality=95)
            found = []
            for result in masks[index]:
                rle = {"size": result["mask"]["size"], "counts": result["mask"]["counts"].encode()}
                if mask_utils.area(rle) > 0:
                    x, y, w, h = mask_utils.toBbox(rle)
                    found.append([result["object_id"], [int(x), int(y), int(x + w), int(y + h)]])
            boxes[index] = found
    (out / "boxes.json").write_text(json.dumps(boxes))


def pipeline(jsonl: Path, video: Path, out: Path) -> None:
    """The real thing: `convert` with its defaults (grounding task, json convention)."""
    from pipeline.ingest import convert

    convert([jsonl], out, video=video)


def child(mode: str, jsonl: str, video: str, out: str) -> None:
    """Run one side in this process and print its wall time (imports of the work included)."""
    start = time.perf_counter()
    (baseline if mode == "baseline" else pipeline)(Path(jsonl), Path(video), Path(out))
    print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(mode: str, jsonl: Path, video: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one run in a fresh child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, str(jsonl), str(video), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
    return json.loads(output.strip().splitlines()[-1])["seconds"], usage.ru_maxrss / 1024


def generate(out: Path, frames: int) -> None:
    """The sample, generated in a child process so that this parent stays small (wait4 counts a forked copy)."""
    code = ("import sys; from pipeline.sample import generate_sample; "
            "generate_sample(sys.argv[1], frames=int(sys.argv[2]), width=1280, height=720)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(out), str(frames)], check=True, env=env)


def first_frames(jsonl: Path, count: int, target: Path) -> Path:
    """The stream limited to its first `count` frames (the same video: decoding stops after the last one)."""
    lines = [line for line in jsonl.read_text().splitlines() if json.loads(line)["frame_index"] < count]
    target.write_text("\n".join(lines) + "\n")
    return target


def same_output(pipeline_out: Path, baseline_out: Path) -> bool:
    """Both produced the same frames and the same boxes."""
    from pipeline.dataset import open_dataset

    boxes = {int(k): v for k, v in json.loads((baseline_out / "boxes.json").read_text()).items()}
    records = open_dataset(pipeline_out).records()
    mine = {r.frame_index: [[o.object_id, o.bbox] for o in r.objects] for r in records}
    images = sorted(p.name for p in (baseline_out / "images").iterdir())
    return mine == boxes and images == sorted(f"{r.frame_index:06d}.jpg" for r in records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--frames", type=int, default=None, help="frames at 1x (default 48, quick 8)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per side, best kept (default 2, quick 1)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "JSONL", "VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    frames = args.frames or (8 if args.quick else 48)
    repeat = args.repeat or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        work = Path(tmp)
        print(f"generating a 1280x720 sample of {10 * frames} frames ...", flush=True)
        generate(work / "sample", 10 * frames)
        big, video = work / "sample" / "sam2_stream.jsonl", work / "sample" / "sam2_stream.mp4"
        small = first_frames(big, frames, work / "small.jsonl")
        results = {}
        for label, jsonl in (("1x", small), ("10x", big)):
            for mode in ("baseline", "pipeline"):
                runs = [measure(mode, jsonl, video, work / f"{mode}-{label}-{k}") for k in range(repeat)]
                results[(mode, label)] = (min(r[0] for r in runs), max(r[1] for r in runs))
                seconds, rss = results[(mode, label)]
                print(f"{mode:8s} {label:>3s} ({frames if label == '1x' else 10 * frames} frames): "
                      f"{seconds:6.2f} s, peak RSS {rss:6.0f} MiB", flush=True)
        sys.path.insert(0, str(ROOT))  # imported only now: the parent stays small while children are measured
        same = same_output(work / "pipeline-10x-0", work / "baseline-10x-0")
        print(f"same frames and boxes as the baseline: {same}")
        ratio = results[("pipeline", "10x")][0] / results[("baseline", "10x")][0]
        rss_ratio = results[("pipeline", "10x")][1] / results[("pipeline", "1x")][1]
    print(f"ratio={ratio:.2f} rss_ratio={rss_ratio:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
