"""Data synthesis pipelines (posttrain synth ...)."""
