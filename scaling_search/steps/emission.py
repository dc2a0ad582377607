"""Step 2 without training: plan the compound family of a backbone and write its configs."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from scaling_search.files import plain
from scaling_search.models.scaling import Multipliers
from scaling_search.plan.emit import write_family
from scaling_search.plan.family import plan_family
from scaling_search.settings import ScaleSettings


def emit_family(s: ScaleSettings, prog: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The family at ``s.phis`` written to ``s.out_dir``; (summary, published comparison or None)."""
    base = Multipliers(s.base_depth_mult, s.base_width_mult)
    members = plan_family(s.backbone, s.coefficients, s.phis, baselines=(), base=base,
                          resolution_px=s.resolution_px, rounding=s.rounding, num_classes=s.num_classes)
    return write_family(s.out_dir, members, s.coefficients, s.rounding, s.num_classes, s.resolution_px, base,
                        plain(asdict(s)), s.compare_published, prog)
