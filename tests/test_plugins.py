"""Plugins from the ``callschedule`` entry-point group, and the built-ins registered like them."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from callschedule import CallScheduler
from callschedule.plugins import DEFAULT_PLUGINS
from callschedule.plugins.memory import MemoryStore


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    """A third-party distribution on sys.path declaring a store plugin for ``fancy://``."""
    (tmp_path / "fancy_store.py").write_text(
        textwrap.dedent(
            """
            from callschedule import hookimpl
            from callschedule.plugins.memory import MemoryStore

            class FancyStore(MemoryStore):
                pass

            @hookimpl
            def callschedule_store(url):
                return FancyStore() if url.startswith("fancy://") else None
            """
        )
    )
    dist = tmp_path / "fancy_store-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[callschedule]\nfancy = fancy_store\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fancy_store", None)


def test_a_store_plugin_installed_by_entry_point_opens_its_urls(installed_plugin: None) -> None:
    with CallScheduler.open("fancy://anything") as scheduler:
        assert type(scheduler.store).__name__ == "FancyStore"
        assert "fancy" in dict(scheduler.plugin_manager.list_name_plugin())


def test_entry_point_plugins_can_be_left_out(installed_plugin: None) -> None:
    with pytest.raises(LookupError):
        CallScheduler.open("fancy://anything", load_entry_points=False)


def test_builtins_are_registered_as_plugins_by_module_name() -> None:
    with CallScheduler.open("memory://") as scheduler:
        names = dict(scheduler.plugin_manager.list_name_plugin())
        assert set(DEFAULT_PLUGINS) <= set(names)
        assert isinstance(scheduler.store, MemoryStore)


def test_every_hook_has_a_docstring_with_its_parameters() -> None:
    from callschedule import hookspecs

    hooks = [name for name in dir(hookspecs) if name.startswith("callschedule_")]
    assert len(hooks) >= 5
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ":param" in doc, f"{name} documents no parameter"
