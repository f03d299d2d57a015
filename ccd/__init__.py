"""ccd: a compute coordinator for DAGs of jobs on workstations, SSH hosts and Slurm clusters."""

__version__ = "0.1.0"
