"""How each kind of setting is read and checked: one reader per kind, behind one interface.

A declared setting (settings_table.Setting) has a kind. Its Kind here reads it in three steps:
  from_config(key, value)  a value the YAML config file holds, or ConfigError naming the key;
  settle(setting, value)   a flag's value (click's text, number or tuple) or from_config's, as
                           Settings holds it (a Path, a tuple of normalised paths, seconds);
  check(setting, value)    what holds for every value of the kind (a timer can wait that long).
check_value() adds what holds for every setting whatever its kind, from its declaration: no NUL,
one of its choices, within its bounds (minimum, maximum), a URL that is a URL.
"""

from __future__ import annotations

import math
import re
import reprlib
import urllib.parse
from pathlib import Path
from typing import Any

from crikpy.errors import ConfigError
from crikpy.paths import normal_path
from crikpy.settings_table import Setting

MAX_SECONDS = 30 * 86400  # a duration beyond it is a typo, and overflows timers (time_t)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    short.maxlist = short.maxdict = 4
    short.maxlevel = 2
    return short


shown = _short_repr().repr  # a value as an error quotes it: short, whatever YAML aliases built


class Kind:
    """The interface: a kind reads as text, unchanged, and holds no rule of its own."""

    def from_config(self, key: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key '{key}' must be a non-empty string, got {shown(value)}")
        return value

    def settle(self, setting: Setting, value: Any) -> Any:
        return value

    def check(self, setting: Setting, value: Any) -> None:
        pass


class Text(Kind):
    """A string."""


class PathKind(Kind):
    """A string that becomes a Path."""

    def settle(self, setting: Setting, value: Any) -> Any:
        return Path(value)


class Int(Kind):
    def from_config(self, key: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {shown(value)}")
        return value


class Bool(Kind):
    def from_config(self, key: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {shown(value)}")
        return value


def _at_most_max_seconds(setting: Setting, value: float) -> None:
    if value > MAX_SECONDS:
        raise ConfigError(f"{setting.names} must be at most {MAX_SECONDS} seconds (30 days), "
                          f"got {value:g}")


class Seconds(Kind):
    """A number of seconds: a YAML number, or a flag's (click reads it as a float)."""

    def from_config(self, key: str, value: Any) -> Any:
        try:
            seconds = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError, OverflowError):
            seconds = math.nan
        if not isinstance(value, (int, float)) or not math.isfinite(seconds):
            raise ConfigError(f"config key '{key}' must be a finite number of seconds, "
                              f"got {shown(value)}")
        return seconds

    def check(self, setting: Setting, value: Any) -> None:
        _at_most_max_seconds(setting, value)
        if not math.isfinite(value):  # click's float reads "inf" and "nan"
            raise ConfigError(f"{setting.label} must be a finite number of seconds, got {value}")


_DURATION_RE = re.compile(r"(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?"
                          r"(?:([0-9]{1,9}(?:\.[0-9]{1,9})?)s?)?")


def parse_duration(key: str, value: Any) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h30m`."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION_RE.fullmatch(str(value).strip())
            if not match or not any(match.groups()):
                raise ConfigError(f"{key} {shown(value)} is not a duration; write e.g. 90s, 10m "
                                  "or 1h30m")
            h, m, sec = match.groups()
            seconds = int(h or 0) * 3600 + int(m or 0) * 60 + float(sec or 0)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{key} must be a finite duration longer than 0, got {shown(value)}")
    return seconds


class Duration(Kind):
    """`90s`, `10m`, `1h30m`, or a number of seconds."""

    def from_config(self, key: str, value: Any) -> Any:
        return parse_duration(key, value)

    def settle(self, setting: Setting, value: Any) -> Any:
        return parse_duration(setting.label, value) if isinstance(value, str) else value

    def check(self, setting: Setting, value: Any) -> None:
        _at_most_max_seconds(setting, value)


class Names(Kind):
    """Comma-separated names, or a YAML list of them."""

    def from_config(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key '{key}' must be a list of names, got {shown(value)}")
        return tuple(v.strip() for v in value)

    def settle(self, setting: Setting, value: Any) -> Any:
        return self.from_config(setting.label, value)


class Paths(Kind):
    """A YAML list of paths, or a repeatable flag's (a space-separated variable's)."""

    def from_config(self, key: str, value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"config key '{key}' must be a list of paths, got {shown(value)}")
        return tuple(value)

    def settle(self, setting: Setting, value: Any) -> Any:
        # "/data/", "/data/." and "/data" are one path
        return tuple(dict.fromkeys(normal_path(p) for p in value))


KINDS: dict[str, Kind] = {"text": Text(), "path": PathKind(), "int": Int(), "bool": Bool(),
                          "seconds": Seconds(), "duration": Duration(), "names": Names(),
                          "paths": Paths()}


def check_bounds(setting: Setting, value: Any) -> None:
    """ConfigError unless `value` is within the setting's declared minimum and maximum."""
    low, high = setting.minimum, setting.maximum
    if (low is None or value >= low) and (high is None or value <= high):
        return
    name = setting.field.replace("_", "-")
    if high is None:
        unit = " seconds" if setting.kind == "seconds" else ""
        message = f"{name} must be at least {low}{unit}, got {value}"
    else:
        note = f" ({setting.minimum_note})" if setting.minimum_note else ""
        message = f"{name} must be between {low}{note} and {high}, got {value}"
    raise ConfigError(f"{message}; {setting.bounds_hint}" if setting.bounds_hint else message)


def _check_url(setting: Setting, value: str) -> None:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError as e:
        raise ConfigError(f"{setting.names} is not a URL ({e}): '{value}'") from None
    if any(c.isspace() for c in value):
        raise ConfigError(f"{setting.names} holds white space: '{value}'")
    if "@" in parts.netloc:
        raise ConfigError(f"{setting.names} holds credentials (user:password@), which "
                          "would show in logs and errors; take them out of the URL "
                          "(for S3, use --s3-credentials-file)")
    if setting.field != "store" and (parts.scheme not in ("http", "https")
                                     or not parts.hostname):
        raise ConfigError(f"{setting.names} must be an http:// or https:// URL with a "
                          f"host, got '{value}'")


def check_value(setting: Setting, value: Any) -> None:
    """What holds for a resolved value (None: unset) of any setting: no NUL in a string, its
    kind's rule, one of its choices, within its bounds, a URL that is http(s) and carries no
    credentials."""
    if value is None:
        return
    strings = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, (str, Path)) and "\0" in str(v) for v in strings):
        raise ConfigError(f"{setting.names} holds a NUL character")
    KINDS[setting.kind].check(setting, value)
    if setting.choices:
        for v in strings:
            if v not in setting.choices:
                raise ConfigError(f"{setting.label} '{v}' is not one of "
                                  f"{', '.join(map(str, setting.choices))}; it is set by "
                                  f"{setting.names}")
    check_bounds(setting, value)
    if setting.field.endswith("_url") or setting.field == "store":
        _check_url(setting, value)
