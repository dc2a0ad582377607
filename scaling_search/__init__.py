"""scaling_search: EfficientNet-style compound model scaling (Tan & Le, arXiv:1905.11946).

The data flows one way: coefficients (``scaling``) → stage tables (``stages``, ``backbones``)
→ cost (``complexity``) and modules (``network``) → the scaled family (``emit``) → the
command-line apps (``scale``).
"""

__version__ = "0.1.0"
