"""Step 2 without training: plan the family of a backbone and write its configs.

The family is the compound one, or, with ``rule`` set, that scaling rule's: at each φ the
rule's network matched to the compound member's measured MACs (φ = 0 is the base network).
Either way each member's dropout is the one ``regularisation`` sets for its cost.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from scaling_search.files import plain, run_folder_around
from scaling_search.models.scaling import Multipliers
from scaling_search.plan.emit import write_family
from scaling_search.plan.family import plan_family
from scaling_search.settings import ScaleSettings


def emit_family(s: ScaleSettings, prog: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The family at ``s.phis`` written to ``s.out_dir``; (summary, published comparison or None).
    Never into a run folder: a search's own ``step2/`` is its winner's family."""
    folder = run_folder_around(s.out_dir)
    if folder is not None:
        raise ValueError(f"out_dir {s.out_dir} lies inside the run folder {folder}, whose files only its run "
                         "writes (a search's step2/ holds its winner's family); choose an out_dir outside it")
    base = Multipliers(s.base_depth_mult, s.base_width_mult)
    rules = () if s.rule is None else (s.rule,)
    members = plan_family(s.backbone, s.coefficients, s.phis, baselines=rules, base=base,
                          resolution_px=s.resolution_px, rounding=s.rounding, num_classes=s.num_classes,
                          regularisation=s.regularisation)
    if s.rule is not None:
        members = [m for m in members if m.method == s.rule.name or m.phi == 0]
    return write_family(s.out_dir, members, s.coefficients, s.rounding, s.num_classes, s.resolution_px, base,
                        plain(asdict(s)), s.compare_published and s.rule is None, prog)
