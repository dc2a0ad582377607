"""What to train: Step 1's candidate grid, Step 2's family plan, and the emitted model configs."""
