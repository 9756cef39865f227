"""The node's settings, read from one JSON or YAML file and checked before anything starts.

Every key is described in ``docs/deployment.md``. A mistyped key, a value of the wrong type, or a result
destination that cannot be reached is one ``UserError`` naming the file and the key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom.sop_class import EnhancedMRImageStorage, MRImageStorage

from pipeline.dicom.pacs import PacsNode
from pipeline.user_errors import UserError

DEFAULT_SOP_CLASSES = (str(MRImageStorage), str(EnhancedMRImageStorage))
OTHER_OBJECTS = ("ignore", "reject")
SEND_TO_SENDER = "sender"


class NodeConfigError(UserError, ValueError):
    """The node's config file is missing, unreadable, or holds a wrong key or value."""


@dataclass(frozen=True)
class DicomwebDestination:
    """A DICOMweb server the SEGs are stored on with STOW-RS; its credentials come from ``auth_file``."""

    url: str
    auth_file: Path | None = None

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class NodeConfig:
    """What ``python -m pipeline serve`` runs: see ``docs/deployment.md`` for each field."""

    ae_title: str
    port: int
    work_dir: Path
    callers: dict[str, tuple[str, int] | None]
    send_to: str | PacsNode | DicomwebDestination = SEND_TO_SENDER
    host: str = "0.0.0.0"
    sop_classes: tuple[str, ...] = DEFAULT_SOP_CLASSES
    series_description: re.Pattern | None = None
    other_objects: str = "ignore"
    quiet_seconds: float = 60.0
    retry_first_seconds: float = 10.0
    retry_max_seconds: float = 600.0
    timeout_seconds: float = 30.0
    bundle: Path | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def destination(self, calling_aet: str) -> PacsNode | DicomwebDestination:
        """Where the SEG of a series sent by ``calling_aet`` goes: back to that caller, or the fixed destination."""
        if self.send_to != SEND_TO_SENDER:
            return self.send_to
        host, port = self.callers[calling_aet] or ("", 0)
        return PacsNode(host, port, calling_aet, self.ae_title, self.timeout_seconds)


_KEYS = {
    "ae_title": str,
    "port": int,
    "host": str,
    "work_dir": str,
    "callers": dict,
    "send_to": (str, dict),
    "segment": dict,
    "quiet_seconds": (int, float),
    "retry": dict,
    "timeout_seconds": (int, float),
    "model": dict,
}
_REQUIRED = ("ae_title", "port", "work_dir", "callers")


def load_node_config(path: str | Path) -> NodeConfig:
    """The node's settings in the JSON or YAML file at ``path`` (relative paths are relative to its folder).

    Raises ``NodeConfigError`` naming the file and the key for anything missing, unknown or out of range.
    """
    path = Path(path)
    raw = _read(path)
    where = str(path)
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise NodeConfigError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(_KEYS)}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise NodeConfigError(f"{where}: missing key {missing[0]!r} (required: {', '.join(_REQUIRED)})")
    for key, kinds in _KEYS.items():
        if key in raw and (not isinstance(raw[key], kinds) or isinstance(raw[key], bool)):
            raise NodeConfigError(f"{where}: {key} has the wrong type ({type(raw[key]).__name__})")
    folder = path.resolve().parent
    ae_title = _ae_title(raw["ae_title"], f"{where}: ae_title")
    callers = _callers(raw["callers"], where)
    timeout = float(raw.get("timeout_seconds", 30))
    send_to = _send_to(raw.get("send_to", SEND_TO_SENDER), where, folder, ae_title, timeout)
    if send_to == SEND_TO_SENDER:
        unreachable = [title for title, address in callers.items() if address is None]
        if unreachable:
            raise NodeConfigError(
                f"{where}: send_to is 'sender' but caller {unreachable[0]!r} has no host and port to send its "
                "results back to"
            )
    segment = _segment(raw.get("segment", {}), where)
    retry = raw.get("retry", {})
    unknown_retry = sorted(set(retry) - {"first_seconds", "max_seconds"})
    if unknown_retry:
        raise NodeConfigError(f"{where}: unknown key retry.{unknown_retry[0]}; the keys are first_seconds, max_seconds")
    numbers = {
        "quiet_seconds": raw.get("quiet_seconds", 60.0),
        "retry.first_seconds": retry.get("first_seconds", 10.0),
        "retry.max_seconds": retry.get("max_seconds", 600.0),
        "timeout_seconds": raw.get("timeout_seconds", 30.0),
    }
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise NodeConfigError(f"{where}: {key} must be a positive number of seconds, got {value!r}")
    if not 0 < raw["port"] < 65536:
        raise NodeConfigError(f"{where}: port must be 1 to 65535, got {raw['port']}")
    return NodeConfig(
        ae_title=ae_title,
        port=raw["port"],
        host=raw.get("host", "0.0.0.0"),
        work_dir=folder / raw["work_dir"],
        callers=callers,
        send_to=send_to,
        sop_classes=segment["sop_classes"],
        series_description=segment["series_description"],
        other_objects=segment["other_objects"],
        quiet_seconds=float(numbers["quiet_seconds"]),
        retry_first_seconds=float(numbers["retry.first_seconds"]),
        retry_max_seconds=float(numbers["retry.max_seconds"]),
        timeout_seconds=float(numbers["timeout_seconds"]),
        **_model(raw.get("model", {}), where, folder),
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise NodeConfigError(f"{path}: cannot read the node's config ({reason})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise NodeConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise NodeConfigError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise NodeConfigError(f"{path}: the node's config must be a mapping of keys to values")
    return raw


def _ae_title(value: object, where: str) -> str:
    text = str(value)
    if not text.strip() or len(text) > 16 or any(char == "\\" or not char.isprintable() for char in text):
        raise NodeConfigError(
            f"{where}: invalid AE title {text!r}: 1 to 16 characters, not only spaces, no backslash or control "
            "character"
        )
    return text


def _callers(raw: dict, where: str) -> dict[str, tuple[str, int] | None]:
    """Accepted calling AE titles, each with the host and port its results go back to (or None)."""
    if not raw:
        raise NodeConfigError(f"{where}: callers is empty; name at least one calling AE title the node accepts")
    callers: dict[str, tuple[str, int] | None] = {}
    for title, address in raw.items():
        key = f"{where}: callers.{title}"
        _ae_title(title, key)
        if address is None or address == {}:
            callers[title] = None
            continue
        if not isinstance(address, dict) or set(address) != {"host", "port"}:
            raise NodeConfigError(f"{key} must be empty or hold exactly host and port")
        callers[title] = (str(address["host"]), _port(address["port"], f"{key}.port"))
    return callers


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise NodeConfigError(f"{key} must be a port number from 1 to 65535, got {value!r}")
    return value


def _send_to(
    raw: str | dict, where: str, folder: Path, ae_title: str, timeout: float
) -> str | PacsNode | DicomwebDestination:
    if raw == SEND_TO_SENDER:
        return SEND_TO_SENDER
    if isinstance(raw, dict) and set(raw) == {"ae_title", "host", "port"}:
        called = _ae_title(raw["ae_title"], f"{where}: send_to.ae_title")
        return PacsNode(str(raw["host"]), _port(raw["port"], f"{where}: send_to.port"), called, ae_title, timeout)
    if isinstance(raw, dict) and "url" in raw and set(raw) <= {"url", "auth_file"}:
        from pipeline.dicom.dicomweb import DicomwebError, check_url

        try:
            url = check_url(str(raw["url"]))
        except DicomwebError as error:
            raise NodeConfigError(f"{where}: send_to.url: {error}") from None
        auth = raw.get("auth_file")
        return DicomwebDestination(url, folder / auth if auth else None)
    raise NodeConfigError(
        f"{where}: send_to must be 'sender', a DICOM node {{ae_title, host, port}} or a DICOMweb server "
        "{url, auth_file}"
    )


def _segment(raw: dict, where: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - {"sop_classes", "series_description", "other_objects"})
    if unknown:
        raise NodeConfigError(
            f"{where}: unknown key segment.{unknown[0]}; the keys are sop_classes, series_description, other_objects"
        )
    sop_classes = []
    for value in raw.get("sop_classes", DEFAULT_SOP_CLASSES):
        uid = _sop_class(str(value))
        if uid is None:
            raise NodeConfigError(f"{where}: segment.sop_classes: {value!r} is neither a SOP class UID nor its name")
        sop_classes.append(uid)
    other = raw.get("other_objects", "ignore")
    if other not in OTHER_OBJECTS:
        raise NodeConfigError(f"{where}: segment.other_objects must be 'ignore' or 'reject', got {other!r}")
    pattern = raw.get("series_description")
    try:
        compiled = re.compile(str(pattern)) if pattern is not None else None
    except re.error as error:
        raise NodeConfigError(f"{where}: segment.series_description is not a regular expression: {error}") from None
    return {"sop_classes": tuple(sop_classes), "series_description": compiled, "other_objects": other}


def _model(raw: dict, where: str, folder: Path) -> dict[str, Any]:
    """``bundle`` and the config overrides of the ``model`` section: device, folds, and any bundle config key."""
    from pipeline.overrides import device_override, folds_override

    unknown = sorted(set(raw) - {"bundle", "device", "folds", "overrides"})
    if unknown:
        raise NodeConfigError(f"{where}: unknown key model.{unknown[0]}; the keys are bundle, device, folds, overrides")
    folds = raw.get("folds")
    if folds is not None and (not isinstance(folds, list) or not all(isinstance(fold, int) for fold in folds)):
        raise NodeConfigError(f"{where}: model.folds must be a list of fold numbers, got {folds!r}")
    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict):
        raise NodeConfigError(f"{where}: model.overrides must map bundle config keys to values")
    return {
        "bundle": folder / raw["bundle"] if "bundle" in raw else None,
        "model_overrides": {**folds_override(folds), **device_override(raw.get("device")), **overrides},
    }


def _sop_class(value: str) -> str | None:
    """The UID of the storage SOP class ``value`` (a UID, a keyword such as ``MRImageStorage``, or a name)."""
    from pynetdicom import sop_class

    if UID(value).is_valid:
        return value
    by_keyword = getattr(sop_class, value.replace(" ", ""), None)
    return str(by_keyword) if by_keyword is not None else None
