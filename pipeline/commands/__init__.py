"""One module per ``python -m pipeline`` command: each exposes ``add_parser(subparsers)`` and ``run(args)``.

A command module imports MONAI, torch and the modules that need them inside ``run`` only, so that building the
parser (and answering ``--help``) stays fast.
"""
