"""The engine: runs validated workflows on executors, with the store as the source of truth."""

from ccd.engine.core import Engine
from ccd.engine.runs import JobEvent, Limits, WorkflowRun

__all__ = ["Engine", "JobEvent", "Limits", "WorkflowRun"]
