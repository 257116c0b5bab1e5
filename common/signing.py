"""A site's Ed25519 key for signing its privacy ledger (``cryptography`` package).

The private key is PEM (PKCS#8, unencrypted: a SuperNode signs unattended) with mode 0600,
created in one ``O_CREAT | O_EXCL`` call so an existing key is never replaced; its public
half is written next to it as ``<key>.pub`` (PEM SubjectPublicKeyInfo, 0644): that file is
what a data-protection officer passes to ``medfed privacy verify --public-key``.
Key material is never printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import MedfedError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
PUBLIC_SUFFIX = ".pub"


class SigningKeyError(MedfedError):
    """A ledger key file is missing, unreadable or not an Ed25519 key."""


def public_key_path(private_key: Path) -> Path:
    """Where the public half of ``private_key`` is written: ``<key>.pub``."""
    return private_key.with_name(private_key.name + PUBLIC_SUFFIX)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The PEM text of a public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (0600) and ``<path>.pub``; refuse to overwrite either."""
    public = public_key_path(path)
    existing = [str(p) for p in (path, public) if p.exists() or p.is_symlink()]
    if existing:
        raise SigningKeyError(f"refusing to overwrite {', '.join(existing)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, private, PRIVATE_MODE)
    _write_new(public, public_pem(key.public_key()), PUBLIC_MODE)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (one-line ``SigningKeyError`` otherwise)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as problem:
        raise SigningKeyError(f"cannot read the ledger signing key {path}: {problem}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_or_create_signing_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in ``path``, created first if there is none; and whether it was created."""
    if path.exists():
        return load_signing_key(path), False
    return create_signing_key(path), True


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a ``.pub`` PEM file (or the private key's public half)."""
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise SigningKeyError(f"cannot read the public key {path}: {problem}") from None
    try:
        key: object = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise SigningKeyError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def signature_valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``data``."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
