"""One module per CLI verb: each defines `add_arguments(parser)` and `run(args) -> int`."""
