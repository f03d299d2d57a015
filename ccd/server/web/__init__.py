"""The dashboard: server-rendered pages of the daemon's workflows, kept live by one event
stream per page. `mount` adds its routes to the API's app."""

from ccd.server.web.routes import Dashboard, mount

__all__ = ["Dashboard", "mount"]
