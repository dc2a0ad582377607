"""The steps end to end (Step 1 by grid or TPE, Step 2) on one shared run pipeline."""
