"""The JSON log file keeps tracebacks readable, from structlog and from stdlib loggers
(uvicorn's, say) alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import structlog

from ccd import logs


def test_tracebacks_are_text_in_the_json_log(tmp_path: Path) -> None:
    log_file = tmp_path / "ccd.log"
    logs.configure(log_file)
    try:
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            structlog.get_logger("ccd.test").exception("ours_failed")
    finally:
        logs.configure(None)  # close the file
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["Exception in ASGI application", "ours_failed"]
    for line in lines:
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert line["exception"].endswith("ZeroDivisionError: boom")
        assert "exc_info" not in line
