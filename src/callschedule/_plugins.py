"""One plugin manager per scheduler: two schedulers in one process never share plugins."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from callschedule import hookspecs
from callschedule.plugins import DEFAULT_PLUGINS

ENTRY_POINT_GROUP = "callschedule"


def make_plugin_manager(
    plugins: Iterable[object] = (), *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, entry-point plugins, built-ins and ``plugins``."""
    pm = pluggy.PluginManager("callschedule")
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name)
    for plugin in plugins:
        pm.register(plugin)
    return pm
