"""Training and evaluation: the run loop, its folder, evaluation, starts, stopping, threads, devices."""
