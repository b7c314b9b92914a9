"""``serve``: a tiny web server for report pages, on the loopback interface only. It serves the
.html files of one folder (nothing else: no listing of other files, no sub-folder) and an index of
them; every answer forbids the page to load anything from elsewhere."""

from __future__ import annotations

import html
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..errors import ConfigError
from .static import CSP

LOOPBACK = ("127.0.0.1", "localhost")


class ReportHandler(BaseHTTPRequestHandler):
    """GET / (an index of the reports, or the one report), GET /<name>.html; 404 for anything else."""

    server_version = "forvalue-report"

    def __init__(self, *args, folder: Path, single: str | None = None, **kw):
        self.folder, self.single = folder, single
        super().__init__(*args, **kw)

    def log_message(self, format, *args) -> None:   # quiet: the command prints the URL once
        return

    def reports(self) -> list[str]:
        return [self.single] if self.single else sorted(p.name for p in self.folder.glob("*.html") if p.is_file())

    def send(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:   # noqa: N802  (http.server's name)
        name = unquote(urlsplit(self.path).path).lstrip("/")
        names = self.reports()
        if name == "" and self.single:
            name = self.single
        if name == "":
            items = "".join(f'<li><a href="{quote(n)}">{html.escape(n)}</a></li>' for n in names)
            self.send(200, (f"<!doctype html><meta charset=utf-8><title>ForValue reports</title><h1>Reports in "
                            f"{html.escape(str(self.folder))}</h1><ul>{items or '<li>none</li>'}</ul>").encode())
        elif name in names and "/" not in name:
            self.send(200, (self.folder / name).read_bytes())
        else:
            self.send(404, b"not found", "text/plain; charset=utf-8")


class ReportServer(ThreadingHTTPServer):
    """The server :func:`serve` returns: ``url`` to open, ``serve_forever()`` to run it here, or
    ``start()`` to run it in a background thread (``shutdown()`` stops it)."""

    daemon_threads = True
    page: str = ""

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{quote(self.page)}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="forvalue-report-server", daemon=True)
        thread.start()
        return thread


def serve(path_or_folder, port: int = 0, host: str = "127.0.0.1") -> ReportServer:
    """A web server for a report file (served at /) or for the .html reports of a folder (an index at
    /), bound to ``host``: 127.0.0.1 (or its name, localhost), never reachable from another machine;
    on ``port`` (0: any free port; ``server.url`` says which)."""
    if host not in LOOPBACK:
        raise ConfigError(f"host {host!r}: reports are served on the loopback interface only (127.0.0.1 or localhost)")
    path = Path(path_or_folder)
    if not path.exists():
        raise ConfigError(f"{path}: no such report file or folder")
    if path.is_file() and path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{path}: not a report (.html) file")
    folder, single = (path.parent, path.name) if path.is_file() else (path, None)
    handler = partial(ReportHandler, folder=folder.resolve(), single=single)
    try:
        server = ReportServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise ConfigError(f"cannot serve on 127.0.0.1 port {port} ({e.strerror or e}); give another --port") from None
    server.page = single or ""
    return server


__all__ = ["serve", "ReportServer", "LOOPBACK"]
