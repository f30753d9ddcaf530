"""A real Redis: Debian's `redis-server` on a free loopback port, with no persistence, so that a
restart brings it back empty (as a Redis without a volume comes back after a crash).

    server = RedisServer(workdir)
    server.start()
    server.url        # redis://127.0.0.1:PORT/0
    server.restart()  # the same port, empty
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.process import LOOPBACK, Daemon, free_port, wait_until

START_TIMEOUT = 15.0


class RedisServer:
    def __init__(
        self, workdir: Path, password: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        """`tls`: a certificate and its key: serve TLS only."""
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.tls = tls
        workdir.mkdir(parents=True, exist_ok=True)
        config = [
            "port 0" if tls else f"port {self.port}",
            f"bind {LOOPBACK}",
            'save ""',
            "appendonly no",
            f"dir {workdir}",
            "protected-mode yes",
        ]
        if password is not None:
            config.append(f'requirepass "{password}"')
        if tls is not None:
            cert, key = tls
            config += [
                f"tls-port {self.port}",
                f"tls-cert-file {cert}",
                f"tls-key-file {key}",
                f"tls-ca-cert-file {cert}",
                "tls-auth-clients no",
            ]
        # The password, if any, is in a file of the test's own directory, not on a command line.
        self.config_path = workdir / "redis.conf"
        self.config_path.write_text("\n".join(config) + "\n")
        self._daemon = Daemon("redis", ["redis-server", str(self.config_path)], workdir)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        self._daemon.start()
        wait_until(
            self._answers,
            START_TIMEOUT,
            "redis-server answers",
            on_timeout=self._daemon.describe_exit,
        )

    def _answers(self) -> bool:
        if not self._daemon.running:
            raise RuntimeError(self._daemon.describe_exit())
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as s:
                if self.tls:
                    return True  # listening; the handshake is the client's test
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def flush(self) -> None:
        """Empty every database (a test starts from nothing)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(64).startswith(b"+OK"), "FLUSHALL refused"

    def stop(self) -> None:
        self._daemon.stop()

    def kill(self) -> None:
        self._daemon.kill()

    def restart(self) -> None:
        """Kill it and start it again on the same port: it comes back empty."""
        self._daemon.kill()
        self.start()

    def log_tail(self) -> str:
        return self._daemon.log_tail()
