"""The dashboard's HTML templates (jinja2, autoescaped; the only module that imports jinja2)
and its static files, both read from the package so that they ship in the wheel."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from ccd.server.web import views

STATIC_FILES = ("dashboard.css", "dashboard.js", "favicon.svg")


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    version: str  # a hash of the body: URLs carry it, so a browser may cache them for ever


def load_static() -> dict[str, StaticFile]:
    folder = resources.files("ccd.server.web") / "static"
    files = {}
    for name in STATIC_FILES:
        body = (folder / name).read_bytes()
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        version = hashlib.sha256(body).hexdigest()[:12]
        files[name] = StaticFile(body, media_type, version)
    return files


class Templates:
    def __init__(self, static: dict[str, StaticFile]) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("ccd.server.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,  # a misspelt name fails a test, not a page
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            static=lambda name: f"static/{name}?v={static[name].version}",
            duration=views.duration,
            clock=views.clock,
            exit_text=views.exit_text,
            job_duration=views.job_duration,
            usage_text=views.usage_text,
            state_order=views.STATE_ORDER,
            terminal=views.TERMINAL_NAMES,
        )

    def render(self, name: str, **context: Any) -> str:
        return self._env.get_template(name).render(**context)

    def macro(self, template: str, name: str, *args: Any) -> str:
        """One macro of a template, rendered alone (a table row pushed to a live page)."""
        module = self._env.get_template(template).make_module()
        return str(getattr(module, name)(*args))
