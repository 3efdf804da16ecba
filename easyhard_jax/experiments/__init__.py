"""Experiments built on the recorder: removal, compression, cause probes."""
