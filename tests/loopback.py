"""A test HTTP server on 127.0.0.1 (any free port), for the download tests: nothing in the tests reaches further."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


@contextmanager
def serving(handler) -> Iterator[ThreadingHTTPServer]:
    """A ThreadingHTTPServer with `handler`, answering in a thread while the block runs; `.url` is its address and
    `.requests` a list for the handler to record what was asked. Stopped and joined on the way out."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()
