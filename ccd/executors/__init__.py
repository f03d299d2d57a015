"""Executors run one attempt of a job on one kind of host (local, ssh, slurm)."""
