"""CURVE authentication and encryption for zq's TCP endpoints.

``zq keys generate DIR`` writes key pairs in ZeroMQ's certificate format: ``NAME.key``
(public, safe to share) and ``NAME.key_secret``. The router and its results actor are
CURVE servers with the router's secret key; they accept only clients whose public key is
in the authorized directory. Clients and workers are CURVE clients with their own secret
key and the router's public key. Traffic is then encrypted, and a peer without an
authorized key can neither submit nor take tasks nor watch states.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
from collections.abc import Sequence
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


def check_key_name(name: str) -> str:
    """``name`` when it names files inside the keys directory, and nowhere else."""
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or name.startswith(".") or "\0" in name or any(s in name for s in separators):
        raise ConfigurationError(f"key name {name!r} refused: a name is a plain file name, "
                                 f"without '/' and not starting with '.' (such as 'router')")
    return name


def generate(directory: Path | str, names: Sequence[str], *,
             force: bool = False) -> list[tuple[Path, Path]]:
    """Write the key pair NAME.key / NAME.key_secret under ``directory`` for each name.

    Nothing is written when a name is refused or, without ``force``, a file of a pair
    exists already. The secret key file is never readable by others, not even for a
    moment: it is written to a new file created with mode 0600, then renamed into place.
    """
    pairs = [(Path(directory) / f"{check_key_name(name)}.key",
              Path(directory) / f"{name}.key_secret") for name in names]
    if not force:
        for path in (path for pair in pairs for path in pair):
            if os.path.lexists(path):
                raise ConfigurationError(f"{path} exists already: pass --force to replace "
                                         f"it (peers that hold the old public key are then "
                                         f"refused)")
    Path(directory).mkdir(parents=True, exist_ok=True)
    for public_path, secret_path in pairs:
        public, secret = zmq.curve_keypair()
        _write(public_path, 0o644, _certificate(public))
        _write(secret_path, 0o600, _certificate(public, secret))
    return pairs


def _certificate(public: bytes, secret: bytes | None = None) -> str:
    """A key file in ZeroMQ's certificate format, as ``zmq.auth.load_certificate`` reads."""
    now = datetime.datetime.now()
    lines = [f"#   ****  Generated on {now:%Y-%m-%d %H:%M:%S} by zq keys generate  ****",
             f"#   ZeroMQ CURVE {'**Secret**' if secret else 'Public'} Certificate"]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write(path: Path, mode: int, text: str) -> None:
    """Write ``text`` to a new file of ``mode`` beside ``path``, then rename it there."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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
