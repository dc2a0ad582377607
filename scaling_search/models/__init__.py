"""The networks: coefficients and rounding, stage tables, backbones, modules and their cost."""
