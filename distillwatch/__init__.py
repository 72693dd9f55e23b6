"""distillwatch: detect distillation (capability-harvesting) attacks in LLM API traffic.

The notebook API lives in :mod:`distillwatch.api` and is re-exported here.
"""

from distillwatch.api import (
    evaluate,
    events_frame,
    fleets,
    load_model,
    read_events,
    read_labels,
    score_frame,
    train,
)

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
