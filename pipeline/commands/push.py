"""`python -m pipeline push DIR --repo USER/NAME`: upload an export folder to the Hub (private by default)."""

from __future__ import annotations

import argparse
import sys

HELP = "push an export folder to the Hugging Face Hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `push` verb."""
    from ..hub import DEFAULT_TOKEN_ENV

    parser.add_argument("export", metavar="DIR", help="export folder written by `python -m pipeline export` (with "
                        "--space: the Space folder written by `export --space`)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo", metavar="USER/NAME", help="model repo to create (or update)")
    target.add_argument("--space", metavar="USER/NAME", help="push DIR as a Gradio Space (inference demo)")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="create the repo private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR",
                        help=f"environment variable holding a write token (default {DEFAULT_TOKEN_ENV}; "
                             "the cached login and HF_TOKEN are never used implicitly)")
    parser.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")


def run(args: argparse.Namespace) -> int:
    """Push and print the repo URL."""
    from ..hub import check_export_folder, push_to_hub, read_token

    if args.space:
        from ..space import check_space_folder, push_space

        space = check_space_folder(args.export)
        print(push_space(space, args.space, read_token(args.token_env), private=args.private,
                         endpoint=args.endpoint))
        return 0
    folder = check_export_folder(args.export)
    token = read_token(args.token_env)
    url = push_to_hub(folder, args.repo, token, private=args.private, endpoint=args.endpoint)
    card = (folder / "README.md").read_text(encoding="utf-8")
    if f'MODEL = "{args.repo}"' not in card and f"MODEL = '{args.repo}'" not in card:
        print(f"note: the card's usage code does not load {args.repo}; export with --repo-id {args.repo} "
              "and push again to point it at this repo", file=sys.stderr)
    print(url)
    return 0
