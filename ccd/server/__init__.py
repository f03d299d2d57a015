"""The daemon: its configuration, lifecycle and HTTP/JSON API on a Unix socket."""
