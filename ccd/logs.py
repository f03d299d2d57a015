"""structlog set up in one place: JSON lines to a file, readable lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog


def configure(
    log_file: Path | None, *, console: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Send events as JSON lines to ``log_file`` and, if given, human-readable to ``console``.

    Uses stdlib logging handlers underneath so both sinks see the same events."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        # Tracebacks as text in an "exception" field: JSON has no way to hold a traceback.
        json_lines: list[structlog.types.Processor] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
        file_handler.setFormatter(_formatter(json_lines, shared))
        root.addHandler(file_handler)
    if console is not None:
        stream = logging.StreamHandler(console)
        renderer = structlog.dev.ConsoleRenderer(colors=console.isatty())
        stream.setFormatter(_formatter([renderer], shared))
        root.addHandler(stream)


def _formatter(
    rendering: list[structlog.types.Processor], shared: list[structlog.types.Processor]
) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        foreign_pre_chain=shared,
    )


def console_default() -> TextIO | None:
    """stderr when a person or the journal reads it (a terminal, or systemd's
    ``$JOURNAL_STREAM``), else nothing: the JSON log file has everything."""
    if sys.stderr.isatty() or os.environ.get("JOURNAL_STREAM"):
        return sys.stderr
    return None
