"""moto's S3 server with atomic conditional writes, for the tests.

moto_server handles each request on its own thread, and its S3 backend
checks If-None-Match / If-Match and then writes without a lock, so under
load two conditional creates of one key can both succeed (seen here: a
create race with two winners while ~70 checks ran at once). A real S3
serializes writes to a key. This runs the same moto application with
request processing behind one lock (connections still get their own
threads, so keep-alive clients do not block each other).

Usage: python moto-server.py HOST PORT
"""

import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Materialize the body inside the lock: the write happens here.
            return list(app(environ, start_response))

    run_simple(host, port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
