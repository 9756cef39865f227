"""One module per ``python -m pipeline`` command: each exposes ``add_parser(subparsers)`` and ``run(args)``."""
