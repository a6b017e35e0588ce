"""The study: the config file, its schema validation and the experiment matrix the Snakefile runs (no torch)."""
