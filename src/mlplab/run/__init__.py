"""What a run needs besides its model and data: command-line checks before Hydra starts
(``preflight``), its run dir (``rundir``: lock, never overwrite), checkpoints (``checkpoint``:
atomic writes, loading with plain-language errors) and trackers (``trackers``)."""
