"""sweeps: does a cyclical learning rate beat a tuned fixed one? Orchestration on Ray Tune.

The package imports nothing itself: a trial's process imports ``sweeps.trainable``, which needs
neither the spec's models nor Optuna (~0.3 s of every trial worker's start)."""
