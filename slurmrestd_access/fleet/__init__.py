"""Beyond one host's deploy: the coordinated key rotation, the staged rollout, the fleet report,
and the per-cluster summary that every run prints."""
