"""The engine: runs validated workflows on executors, with the store as the source of truth."""

from ccd.engine.core import Engine, stored_states
from ccd.engine.runs import JobEvent, WorkflowRun
from ccd.models import Limits

__all__ = ["Engine", "JobEvent", "Limits", "WorkflowRun", "stored_states"]
