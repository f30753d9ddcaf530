"""How the benchmark's tracker is secured, as a production cluster's is: a cluster secret on the
tracker's host, each node's own credential, an operator credential for `preheat`, and with
`tls` a self-signed certificate for the tracker's address that the nodes trust.

`--tracker-security open` runs the tracker as before node identity existed (no credentials), to
measure what identity and TLS cost side by side.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tracker.credentials import Role, issue, new_secret

OPEN, IDENTITY, TLS = "open", "identity", "tls"
MODES = (OPEN, IDENTITY, TLS)


def parse_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {text!r}")
    return value


def _private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class TrackerSecurity:
    """The files of one benchmark run, under `directory`; the flags each side needs."""

    def __init__(self, mode: str, directory: Path, tracker_ips: list[str]) -> None:
        """`tracker_ips`: every address a tracker replica may serve on (its certificate's)."""
        self.mode = mode
        self._directory = directory
        self._secret = new_secret()
        self._cert: Path | None = None
        if mode == OPEN:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self._secret_file = _private(directory / "secret", self._secret)
        self._operator = self._credential(Role.OPERATOR, "bench")
        if mode == TLS:
            self._cert = directory / "tracker.pem"
            self._key = directory / "tracker.key"
            _self_signed(self._cert, self._key, tracker_ips)

    def _credential(self, role: Role, name: str) -> Path:
        path = self._directory / f"{role.value}-{name}.cred"
        return _private(path, issue(self._secret, role, name).encode())

    def tracker_args(self) -> list[str]:
        if self.mode == OPEN:
            return []
        args = ["--secret-file", str(self._secret_file)]
        if self._cert is not None:
            args += ["--tls-cert", str(self._cert), "--tls-key", str(self._key)]
        return args

    def node_args(self, node_id: str) -> list[str]:
        if self.mode == OPEN:
            return []
        args = ["--credential-file", str(self._credential(Role.NODE, node_id))]
        if self._cert is not None:
            args += ["--tracker-tls-ca", str(self._cert)]
        return args

    def operator_args(self) -> list[str]:
        if self.mode == OPEN:
            return []
        args = ["--credential-file", str(self._operator)]
        if self._cert is not None:
            args += ["--tls-ca", str(self._cert)]
        return args


def _self_signed(cert: Path, key: Path, ips: list[str]) -> None:
    """An EC P-256 certificate for `ips`, valid for a day, made by Debian's openssl."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=distributed-images bench tracker",
            "-addext", "subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips),
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
