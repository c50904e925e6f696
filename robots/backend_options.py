"""Backend options carried in an arm URI: `ur:192.168.1.102?stale_periods=5&gain=500`.

A session names its arm by one URI (the arm node's `backend` parameter), so the few config fields a
deployment tunes (how many silent control periods make a fault, servo gains) ride along after `?`. Each
value is converted to its dataclass field's type; an unknown field or a bad value is a ValueError whose
one line names the URI and the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_PARSE = {
    "float": float,
    "int": int,
    "str": str,
    "bool": lambda v: {"true": True, "1": True, "false": False, "0": False}[v.lower()],
}


def split_options(scheme: str, target: str, config_cls: type) -> tuple[str, dict[str, Any]]:
    """(host, {field: value}) from `host?field=value&...`; `host` is never given as an option."""
    host, _, query = target.partition("?")
    if not query:
        return host, {}
    fields = {f.name: str(f.type) for f in dataclasses.fields(config_cls) if f.name != "host"}
    options: dict[str, Any] = {}
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        uri = f"{scheme}:{target}"
        if name not in fields or not eq:
            raise ValueError(
                f"arm {uri!r}: unknown option {name!r}; options are {', '.join(sorted(fields))} (name=value)"
            )
        try:
            options[name] = _PARSE[fields[name]](value)
        except (KeyError, ValueError):
            raise ValueError(f"arm {uri!r}: option {name}={value!r} is not a {fields[name]}") from None
    return host, options
