"""File formats and safety below every layer: checkpoints, run-folder integrity records, locks."""
