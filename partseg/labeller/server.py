"""Starting the labeller: the threaded HTTP server on 127.0.0.1 and the three ways to run it.

`serve` builds one (not serving yet), `start_labeller` serves it in a background thread (tests, notebooks),
`run_labeller` serves until Ctrl-C (the CLI). The page and its API are partseg.labeller.handler's; the kit logic
is partseg.labeller.kit's.
"""

from __future__ import annotations

import os
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from partseg.http_errors import RequestError
from partseg.labeller.handler import Handler
from partseg.labeller.kit import LabellerApp
from partseg.labeller.suggest import Suggester

__all__ = ["HOST", "LabellerApp", "LabellerServer", "RequestError", "_Suggester", "run_labeller", "serve",
           "start_labeller"]

HOST = "127.0.0.1"
_Suggester = Suggester  # the name this module exported before the split (tests/test_any_generator.py uses it)


class LabellerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the app; `url` is the page, `stop()` shuts it down and frees the port."""

    daemon_threads = True

    def __init__(self, app: LabellerApp, port: int = 0, verbose: bool = False):
        super().__init__((HOST, port), Handler)
        self.app, self.verbose = app, verbose
        self.url = f"http://{HOST}:{self.server_address[1]}/"
        self._thread: threading.Thread | None = None

    def start(self) -> LabellerServer:
        """Serve in a daemon thread (tests, notebooks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="partseg-labeller",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def serve(kit: str | os.PathLike, port: int = 0, head: str | os.PathLike | None = None, gan: Any = None,
          verbose: bool = False, memory: Any = None) -> tuple[LabellerServer, str]:
    """A labeller server for `kit` bound to 127.0.0.1:port (0: a free port), not yet serving; returns it and its
    URL. `head` (a head file) with `gan` (checkpoint, builtin:NAME or a Generator; default the generator the
    kit's samples.json names) enables the "suggest" button; `memory` bounds its feature maps (GB, None: auto)."""
    server = LabellerServer(LabellerApp(kit, head=head, gan=gan, memory=memory), port=port, verbose=verbose)
    return server, server.url


def start_labeller(kit: str | os.PathLike, port: int = 0, head: str | os.PathLike | None = None, gan: Any = None,
                   verbose: bool = False) -> tuple[LabellerServer, str]:
    """`serve`, already serving in a background thread; call `server.stop()` when done."""
    server, url = serve(kit, port=port, head=head, gan=gan, verbose=verbose)
    return server.start(), url


def run_labeller(kit: str | os.PathLike, port: int = 8765, head: str | os.PathLike | None = None, gan: Any = None,
                 verbose: bool = False, on_ready: Any = None, memory: Any = None) -> None:
    """Serve until Ctrl-C (the CLI). `on_ready(url)` is called once the port is bound."""
    server, url = serve(kit, port=port, head=head, gan=gan, verbose=verbose, memory=memory)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
