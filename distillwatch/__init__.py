"""distillwatch: detect distillation (capability-harvesting) attacks in LLM API traffic.

The notebook API lives in :mod:`distillwatch.api` and is re-exported here lazily, so the
command line starts without importing torch until a command needs it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "evaluate",
    "events_frame",
    "fleets",
    "load_model",
    "read_events",
    "read_labels",
    "score_frame",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from distillwatch import api

        return getattr(api, name)
    raise AttributeError(f"module 'distillwatch' has no attribute {name!r}")
