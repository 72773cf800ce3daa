"""CURVE authentication and encryption for zq's TCP endpoints.

``zq keys generate DIR`` writes key pairs in ZeroMQ's certificate format: ``NAME.key``
(public, safe to share) and ``NAME.key_secret``. The router and its results actor are
CURVE servers with the router's secret key; they accept only clients whose public key is
in the authorized directory. Clients and workers are CURVE clients with their own secret
key and the router's public key. Traffic is then encrypted, and a peer without an
authorized key can neither submit nor take tasks nor watch states.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigurationError


@dataclass(frozen=True)
class ServerKeys:
    public_key: bytes
    secret_key: bytes
    authorized_dir: Path


@dataclass(frozen=True)
class ClientKeys:
    public_key: bytes
    secret_key: bytes
    server_key: bytes


def generate(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Write the key pair NAME.key / NAME.key_secret under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def _load_secret(path: Path | str) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read CURVE key {path}: {exc}") from None
    if secret is None:
        raise ConfigurationError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def _public_key(value: str) -> bytes:
    """A public key given as a certificate file or as its 40-character z85 text."""
    if len(value) == 40 and not Path(value).exists():
        return value.encode()
    try:
        public, _ = zmq.auth.load_certificate(value)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read CURVE public key {value}: {exc}") from None
    return public


def server_keys(secret_key_file: str | Path, authorized_dir: str | Path) -> ServerKeys:
    public, secret = _load_secret(secret_key_file)
    authorized = Path(authorized_dir)
    if not authorized.is_dir():
        raise ConfigurationError(f"authorized keys directory {authorized} does not exist")
    return ServerKeys(public, secret, authorized)


def client_keys(secret_key_file: str | Path, server_key: str) -> ClientKeys:
    public, secret = _load_secret(secret_key_file)
    return ClientKeys(public, secret, _public_key(server_key))


def secure_server(sock: zmq.Socket[Any], keys: ServerKeys | None) -> None:
    """Make ``sock`` a CURVE server; call before bind."""
    if keys is not None:
        sock.curve_server = True
        sock.curve_publickey = keys.public_key
        sock.curve_secretkey = keys.secret_key


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client; call before connect."""
    if keys is not None:
        sock.curve_serverkey = keys.server_key
        sock.curve_publickey = keys.public_key
        sock.curve_secretkey = keys.secret_key


def start_authenticator(ctx: zmq.Context[Any], keys: ServerKeys,
                        also_allow: tuple[bytes, ...] = ()) -> ThreadAuthenticator:
    """Start the ZAP handler that admits only the authorized public keys."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    for key in also_allow:
        auth.certs.setdefault("*", {})[key] = True
    return auth
