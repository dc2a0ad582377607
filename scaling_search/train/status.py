"""How a trial ended: ``ok``, ``failed`` (an error, or a diverged loss) or ``stopped`` early by
the scheduler. A module of its own so that reading results needs no torch."""

OK, FAILED, STOPPED = "ok", "failed", "stopped"
