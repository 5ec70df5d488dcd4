"""The API served for real over HTTP on a loopback port: waitress in a thread of this
process, for tests, benchmarks and harnesses that need a server (boto3, the AWS CLI, the
CLI, concurrent clients)."""

from __future__ import annotations

import threading

import waitress


class ThreadedServer:
    """APP under waitress on 127.0.0.1 and a free port; ``url`` is its base URL. Use it as
    a context manager, or call ``close``."""

    def __init__(self, app, threads: int = 4):
        self._server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving: the request threads first, then every socket, closed from the
        server's own loop thread (closed from here, its select() could meet a closed file
        descriptor), which then ends as nothing is left to watch."""
        server = self._server
        server.task_dispatcher.shutdown()

        def close_all() -> None:
            for channel in list(server._map.values()):
                channel.close()

        if not self._thread.is_alive():  # the loop ended already, closing what it watched
            return
        try:
            server.trigger.pull_trigger(close_all)
        except OSError:  # the loop ended meanwhile, its trigger with it (seen once: EBADF)
            pass
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
