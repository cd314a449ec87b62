"""Run an exported model on one image: print the answer and the parsed boxes, save the image with the boxes drawn.

    python deploy/inference_example.py exports/shapes-lora frame.jpg --prompt "Find every circle in the image."
    python deploy/inference_example.py exports/shapes-merged frame.jpg --out frame_boxes.png

Works for adapter exports (the base model is loaded by its Hub id, or built locally for the tiny models) and merged
exports. Needs this repository's `pipeline` package (found next to this file) and its requirements.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's pipeline package

from pipeline.errors import UserError  # noqa: E402 - after the path set-up above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="export folder (from `python -m pipeline export`)")
    parser.add_argument("image", help="image file to ask about")
    parser.add_argument("--prompt", help="question (default: the first training prompt with the first label)")
    parser.add_argument("--out", help="where to save the image with boxes (default: <image stem>_boxes.png here)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        from pipeline.inference import default_prompt, draw_boxes, load_export, predict

        loaded = load_export(args.export, device=args.device)
        prompt = args.prompt or default_prompt(loaded.studio)
        result = predict(loaded, args.image, prompt, max_new_tokens=args.max_new_tokens)
        out = Path(args.out or f"{Path(args.image).stem}_boxes.png")
        draw_boxes(args.image, result["boxes"], out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"prompt: {prompt}")
    print(f"answer: {result['answer']}")
    if result["parse_error"]:
        print(f"boxes: none parsed ({result['parse_error']})")
    print("boxes: " + json.dumps(result["boxes"]))
    print(f"saved: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
