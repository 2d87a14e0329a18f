"""Filter names to classes: the built-ins found in `curate.filters`, or any `module:Class`.

Built-ins are discovered by scanning the modules of `curate.filters` for Filter subclasses with a
`name`, so adding a filter is one new file and no change anywhere else.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from functools import cache

from curate.errors import ConfigError
from curate.filtering.base import Filter


@cache
def builtin_filters() -> dict[str, type[Filter]]:
    """Every Filter subclass defined in a module of `curate.filters`, by its `name`."""
    import curate.filters as package

    found: dict[str, type[Filter]] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Filter) and obj.name and obj.__module__ == module.__name__:
                found[obj.name] = obj
    return found


def filter_class(name: str) -> type[Filter]:
    """The class for a YAML filter name: a built-in name or `package.module:Class`."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"filter '{name}': cannot import {attr} from {module_name} ({exc})") from None
        if not (inspect.isclass(obj) and issubclass(obj, Filter)):
            raise ConfigError(f"filter '{name}': {attr} is not a subclass of curate.filtering.base.Filter")
        return obj
    known = builtin_filters()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown filter '{name}' (built-in filters: {', '.join(sorted(known))}; "
            f"or give module:Class){hint}"
        )
    return known[name]
