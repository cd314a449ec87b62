"""`python -m pipeline serve EXPORT`: serve an export over the OpenAI API with transformers serve or vLLM."""

from __future__ import annotations

import argparse

HELP = "serve an export over the OpenAI API (transformers serve or vLLM)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `serve` verb."""
    from ..serve import ENGINES

    parser.add_argument("export", metavar="EXPORT", help="export folder written by `python -m pipeline export`")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="transformers: `transformers serve` on CPU or GPU (default); vllm: `vllm serve` "
                             "where vLLM is installed (GPU hosts)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="auto", help="transformers engine: auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="weights dtype (auto: as saved; an adapter is merged in float32 on CPU)")


def run(args: argparse.Namespace) -> int:
    """Merge if needed, start the engine, wait for /v1/models, serve until Ctrl-C."""
    from ..serve import serve_forever

    return serve_forever(args.export, engine=args.engine, host=args.host, port=args.port, device=args.device,
                         dtype=args.dtype)
