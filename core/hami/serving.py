"""The threaded HTTP server every hami endpoint runs on (extender, webhook, test API server)."""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer

log = logging.getLogger(__name__)


class ThreadedHTTPServer(ThreadingHTTPServer):
    """A peer hanging up mid-request is routine (watch streams cut, clients timing out): it is logged
    at debug level instead of printing a traceback to stderr; anything else is logged as an error."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("event=client_disconnected client=%s error=%r", client_address, error)
            return
        log.error("event=http_handler_error client=%s", client_address, exc_info=True)
