"""Runners execute a finished list of trial specs and hand each outcome back to the driver.

Every runner has ``run(specs, data, settings, on_result, progress)``: ``on_result(spec, row,
history)`` is called in the driver process as each trial ends, so results are recorded as
they arrive whichever runner produced them. Swapping one runner for another changes nothing
upstream.
"""

from scaling_search.train.runners.local import LocalRunner

__all__ = ["LocalRunner"]
