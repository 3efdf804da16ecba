"""Runs gcp-storage-emulator with one thread per connection.

  python tests/gcs_emulator.py PORT BUCKET

The emulator serves one connection at a time (``http.server.HTTPServer``),
so a client that opens a connection and sends nothing on it (tensorstore's
connection pool does) blocks every other client for good. Here connections
are served by threads and requests still run one at a time (one lock around
the emulator's request router), as its in-memory store expects.
"""

import sys
import threading
from http import server as http_server

from gcp_storage_emulator import server as emulator


class _ThreadingServer(http_server.ThreadingHTTPServer):
  daemon_threads = True


def main(port: int, bucket: str) -> None:
  lock = threading.Lock()
  handle = emulator.Router.handle

  def handle_one_at_a_time(self, method):
    with lock:
      return handle(self, method)

  emulator.Router.handle = handle_one_at_a_time
  emulator.server.HTTPServer = _ThreadingServer  # The emulator's own process.
  emulator.Server('127.0.0.1', port, in_memory=True,
                  default_bucket=bucket).run()


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[2])
