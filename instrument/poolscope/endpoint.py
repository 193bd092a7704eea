"""ENDPOINT strings: ``:PORT`` (loopback), ``HOST:PORT``, ``[v6]:PORT`` or ``unix:PATH``.

Standard library only: both sides parse endpoints.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400


class EndpointError(ValueError):
    """An ENDPOINT string that cannot be parsed; the message is one line for users."""


@dataclass(frozen=True)
class Endpoint:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str | None = None  # set for a Unix socket

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        """True for a Unix socket, ``localhost`` or a loopback IP literal.

        Any other host name is not: "127.example.com" may resolve to a public
        interface of this machine.
        """
        if self.path is not None:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """Parse an ENDPOINT string or raise :class:`EndpointError` saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise EndpointError("empty endpoint; expected :PORT, HOST:PORT or unix:PATH")
    if raw.startswith("unix:"):
        path = raw[5:]
        if not path:
            raise EndpointError(f"{text!r}: unix: needs a socket path")
        return Endpoint(host="", port=0, path=path)
    if raw.startswith("["):
        host, sep, port_s = raw[1:].partition("]:")
        if not sep:
            raise EndpointError(f"{text!r}: expected [IPv6]:PORT")
    else:
        host, sep, port_s = raw.rpartition(":")
        if not sep:
            if raw.isdigit():
                host, port_s = "", raw
            else:
                raise EndpointError(f"{text!r}: expected :PORT, HOST:PORT or unix:PATH")
    if not port_s.isdigit():
        raise EndpointError(f"{text!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise EndpointError(f"{text!r}: port {port} is out of range 0-65535")
    return Endpoint(host=host or DEFAULT_HOST, port=port)
