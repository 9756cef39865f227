"""Bundle config overrides from the command line: the shared arguments, ``--KEY VALUE`` pairs and their checks.

Nothing here imports MONAI or torch, so building the command-line parser stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import default_bundle_dir
from pipeline.user_errors import UserError

# A config value starting with one of these is a MONAI reference, expression or macro: its type is only known
# once it is evaluated, so an override of it (or by it) is not type-checked.
CONFIG_SIGILS = ("@", "$", "%")
# MONAI's command line (python-fire) reads these two words as booleans and keeps any other word, "false" included,
# as a string; the pipeline's command line reads them so too, beside JSON's true and false.
PYTHON_BOOLEANS = {"True": True, "False": False}
# The expected type of an override, by the type of the value the config holds, tested in this order (a bool is
# also an int, and an int is a fine float).
EXPECTED_TYPES = (
    (bool, (bool,), "true or false"),
    (int, (int,), "an integer"),
    (float, (int, float), "a number"),
    (str, (str,), "a string"),
    (list, (list,), "a JSON list"),
    (dict, (dict,), "a JSON object"),
)


def add_bundle_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """Add the arguments shared by the commands that run a bundle config, and the help's closing paragraph on
    overrides with ``example``, overrides that command accepts (a test runs each through the command's checks)."""
    parser.add_argument(
        "--bundle", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA if available, else CPU)"
    )
    add_quiet_argument(parser)
    parser.epilog = override_epilog(example)


def override_epilog(example: str) -> str:
    """The help's paragraph on ``--KEY VALUE`` overrides, with ``example``."""
    return (
        f"Any other --KEY VALUE pair overrides the bundle config, e.g. {example} (VALUE is parsed as JSON when it "
        "can be; True and False are booleans too). KEY must exist in the command's configs and VALUE must have the "
        "type the config gives it."
    )


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--quiet``: no progress bar on a terminal, no progress lines in a log."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="report no progress (default: a bar on a terminal, a line now and then in a log)",
    )


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--ckpt-dir`` (also spelt ``--ckpt_dir``, as the config key it sets)."""
    parser.add_argument(
        "--ckpt-dir",
        "--ckpt_dir",
        dest="ckpt_dir",
        default=None,
        help="folder of the model: model.pt and model_config.json (default: <bundle>/models)",
    )


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides that flags of the command line stand for: ``--ckpt-dir DIR`` is ``--ckpt_dir DIR``."""
    ckpt_dir = getattr(args, "ckpt_dir", None)
    return [] if ckpt_dir is None else ["--ckpt_dir", str(ckpt_dir)]


def quiet_override(quiet: bool) -> dict[str, bool]:
    """The config override of ``--quiet`` for the configs with progress reports (training, evaluation)."""
    return {"progress_bar": False} if quiet else {}


def add_folds_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--folds``: which models of a fold ensemble run (all by default)."""
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        metavar="K",
        help="run only these fold models of the ensemble, e.g. `--folds 1` for one model at a quarter of the time "
        "(default: all, their probabilities averaged)",
    )


def add_strict_weights_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--strict-weights``: refuse weights that differ from the hash the bundle's ``large_files.yml`` lists."""
    parser.add_argument(
        "--strict-weights",
        action="store_true",
        help="refuse weights whose hash differs from the one the bundle's large_files.yml lists for them "
        "(default: a warning; config key strict_weights)",
    )


def strict_weights_override(strict: bool) -> dict[str, bool]:
    """The config override of ``--strict-weights``, or nothing to keep the config's ``strict_weights``."""
    return {"strict_weights": True} if strict else {}


def folds_override(folds: Sequence[int] | None) -> dict[str, Any]:
    """The config override of ``--folds``: ``{"folds": [...]}``, or nothing when all models run."""
    return {} if folds is None else {"folds": sorted(set(folds))}


def parse_overrides(extra: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--epochs", "5", "--train#dataloader#batch_size", "4"]`` into bundle config overrides.

    Values are parsed as JSON where possible (numbers, booleans, lists), ``True`` and ``False`` as booleans (as
    MONAI's command line reads them), anything else kept as a string. Raises ``UserError`` for an argument that is
    not a ``--KEY VALUE`` pair.
    """
    overrides: dict[str, Any] = {}
    items = list(extra)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or len(key) < 3:
            raise UserError(f"unexpected argument {key!r}: overrides are given as --KEY VALUE")
        if not items or items[0].startswith("--"):
            raise UserError(f"override {key} needs a value")
        raw = items.pop(0)
        try:
            overrides[key[2:]] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key[2:]] = PYTHON_BOOLEANS.get(raw, raw)
    return overrides


def require_booleans(switches: Mapping[str, Any]) -> None:
    """Refuse, in one ``UserError``, every switch of a bundle config that does not hold a boolean.

    The bundle's configs call it first as they initialise, with their ``switches``: ``python -m monai.bundle run
    ... --flip_tta false`` hands the config the string ``"false"``, which an expression would take as true.
    """
    problems = [
        f"--{key} {value!r}: expected a boolean; MONAI's command line reads True and False as booleans and keeps any "
        "other word as a string"
        for key, value in switches.items()
        if not isinstance(value, bool)
    ]
    if problems:
        raise UserError("\n".join(problems))


def device_override(device: str | None) -> dict[str, str]:
    """The config override that pins ``device``, or nothing to keep the config's automatic choice."""
    return {} if device is None else {"device": f"$torch.device({device!r})"}


def config_ids(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every id of a raw (unparsed) config, ``#``-joined as overrides name them, with the value it holds."""
    if isinstance(config, Mapping):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return {}
    ids: dict[str, Any] = {}
    for key, value in items:
        ids[f"{prefix}{key}"] = value
        ids.update(config_ids(value, f"{prefix}{key}#"))
    return ids


def expected_type(current: Any, value: Any) -> str | None:
    """What an override of ``current`` should be, when ``value`` is not that; ``None`` when it fits."""
    if not isinstance(value, (bool, int, float, str, list, dict)):
        return None  # a component given from Python (a loss, a network), not a command-line value
    if any(isinstance(item, str) and item.startswith(CONFIG_SIGILS) for item in (current, value)):
        return None
    if isinstance(current, dict) and "_target_" in current:
        return None  # a component: what it builds (a datalist, a transform) may be given as a plain value
    for kind, accepted, name in EXPECTED_TYPES:
        if isinstance(current, kind):
            fits = isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))
            return None if fits else name
    return None


def check_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Raise ``UserError`` naming every override whose key is not in ``config`` or whose value has another type.

    ``config`` is the merged raw config of a command; an unknown key comes with the nearest existing one, a
    value of the wrong type with the type the config holds there.
    """
    known = config_ids(config)
    problems = []
    for key, value in overrides.items():
        key = key.replace("::", "#")  # MONAI's other id separator
        if key not in known:
            nearest = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean --{nearest[0]}?" if nearest else "the bundle's configs have no such key"
            problems.append(f"unknown override --{key}; {hint}")
        elif (expected := expected_type(known[key], value)) is not None:
            problems.append(f"override --{key} {json.dumps(value)}: expected {expected}, as the config has")
    if len(problems) > 1:
        problems.insert(0, f"{len(problems)} overrides do not fit the bundle config:")
    if problems:
        raise UserError("\n".join(problems))


def refuse_owned_overrides(overrides: Mapping[str, Any], owned: Mapping[str, str]) -> None:
    """Refuse, in one ``UserError``, an override of a config key the command sets from one of its own flags
    (``owned`` maps the key to the flag): ``infer --output_dir X`` would write the masks outside ``--output``,
    past its lock and its checks."""
    for key, flag in owned.items():
        if key in overrides:
            raise UserError(f"--{key}: this command sets it from {flag}; give {flag} instead")
