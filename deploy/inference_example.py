"""Ask a served model about one image with the `openai` client: print the answer and the parsed boxes, save the
image with the boxes drawn.

    python -m pipeline serve exports/shapes-lora --port 8000          # or deploy/Dockerfile, or vLLM
    python deploy/inference_example.py frame.jpg --base-url http://127.0.0.1:8000/v1 \\
        --prompt "Find every circle in the image."

The answer is parsed with this repository's parser (pipeline/coords/) in the served export's coordinate
convention: read from the export's studio.json when the served model is an export folder on this machine, else
--convention (default json). A hosted endpoint's key is read from the variable named by --api-key-env.
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
    parser.add_argument("image", help="image file to ask about")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="OpenAI-compatible endpoint")
    parser.add_argument("--model", help="model name to request (default: the first the endpoint lists)")
    parser.add_argument("--prompt", help="question (default: the export's first training prompt)")
    parser.add_argument("--convention", help="answer convention when the served model is not an export here")
    parser.add_argument("--api-key-env", help="environment variable holding the API key (hosted endpoints)")
    parser.add_argument("--out", help="where to save the image with boxes (default: <image stem>_boxes.png here)")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        from pipeline.coords import ParseError, get_convention
        from pipeline.endpoint_eval import Endpoint, image_data_url, read_api_key, served_settings
        from pipeline.inference import default_prompt, draw_boxes

        endpoint = Endpoint(args.base_url, read_api_key(args.api_key_env), retries=2)
        model = args.model or endpoint.models()[0]
        studio = served_settings(model)
        convention = args.convention or studio.get("convention") or "json"
        prompt = args.prompt or default_prompt(studio)
        image = Path(args.image)
        from PIL import Image

        cap = studio.get("max_image_size")
        with Image.open(image) as picture:
            shown = picture.copy()
            if cap and max(shown.size) > cap:  # the model sees the frame at the training cap
                shown.thumbnail((cap, cap))
            sx, sy = picture.width / shown.width, picture.height / shown.height
        answer = endpoint.ask(model, image_data_url(image, cap), prompt, args.max_tokens)
        try:
            parsed = get_convention(convention).parse_boxes(answer, shown.width, shown.height)
            error = None
        except ParseError as exc:
            parsed, error = [], str(exc)
        boxes = [{"label": label, "box": [round(b[0] * sx, 1), round(b[1] * sy, 1), round(b[2] * sx, 1),
                                          round(b[3] * sy, 1)]} for label, b in parsed]
        out = Path(args.out or f"{image.stem}_boxes.png")
        draw_boxes(image, boxes, out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model: {model}")
    print(f"prompt: {prompt}")
    print(f"answer: {answer}")
    if error:
        print(f"boxes: none parsed ({error})")
    print("boxes: " + json.dumps(boxes))
    print(f"saved: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
