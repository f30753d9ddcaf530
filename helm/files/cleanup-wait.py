"""Waits until the uninstall hook has restored containerd's files on every host.

Each cleanup pod listens on PORT only after its init container has run `containerd-config
--remove`; the headless Service lists every cleanup pod, ready or not. Done when the list has
stayed the same for SETTLE seconds and every address accepts a connection.
usage: cleanup-wait.py SERVICE PORT TIMEOUT_SECONDS [SETTLE_SECONDS]
"""

import socket
import sys
import time

SETTLE = 15.0  # long enough for the DaemonSet to have created a pod on every host


def addresses(service: str, port: int) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(service, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def done(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return False
    return True


def main(service: str, port: int, timeout: float, settle: float = SETTLE) -> int:
    deadline = time.monotonic() + timeout
    seen, since = frozenset[str](), time.monotonic()
    while time.monotonic() < deadline:
        current = addresses(service, port)
        if current != seen:
            seen, since = current, time.monotonic()
        pending = sorted(a for a in seen if not done(a, port))
        if seen and not pending and time.monotonic() - since >= settle:
            print(f"containerd's files restored on {len(seen)} host(s)")
            return 0
        time.sleep(min(2.0, max(0.1, settle / 4)))
    print(f"timed out: hosts not restored yet: {sorted(seen) or 'no cleanup pod found'}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:5])))
