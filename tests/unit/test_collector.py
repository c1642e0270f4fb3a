"""The serving process's collector settings (collector.py), in a fresh interpreter of their own."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, weakref
from innominatus import collector
before = gc.get_threshold()
collector.settle_for_serving()

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the freeze: still the collector's to find
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "cycle_collected": gone() is None}))
"""


def test_settling_freezes_the_start_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    assert found["before"] != found["after"]
    assert found["after"] == [50_000, 20, 100]
    assert found["frozen"] > 1000  # the imported modules' objects, out of every later collection
    assert found["cycle_collected"] is True
