"""What an earlier revision defined, for a downgrade that puts it back (revision files are not modules
one can import by name: their names start with digits)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def number_events_of(filename: str) -> str:
    """The `NUMBER_EVENTS` SQL (the numbering function) of the revision file `filename`."""
    path = Path(__file__).with_name("versions") / filename
    spec = importlib.util.spec_from_file_location(f"innominatus_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.NUMBER_EVENTS)
