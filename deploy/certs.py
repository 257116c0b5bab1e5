"""Certificates and node keys for a real deployment, made with the ``cryptography`` package.

``init_authority`` writes a private CA and the SuperLink's TLS certificate (subjectAltNames
for every host name and IP address the hospitals use); ``add_site`` writes one hospital's
node-authentication key pair in the formats Flower 1.42 expects: an ECDSA (NIST P-384)
private key as OpenSSH PEM for ``flower-supernode --auth-supernode-private-key`` and the
public key as one OpenSSH line for ``flwr supernode register``; next to it the Ed25519 key
that signs the site's privacy ledger (``common.signing``; node config ``ledger-key``) and its
public half ``<key>.pub`` for ``medfed privacy verify``.

Private keys are created with mode 0600 in one ``O_CREAT | O_EXCL`` call: an existing file is
never replaced, and key material is never printed or logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import MedfedError
from common.signing import create_signing_key, public_key_path

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
SITES_DIR = "sites"
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
CA_DAYS = 3650
SERVER_DAYS = 825

_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CertificateError(MedfedError):
    """A certificate directory or name cannot be used."""


@dataclass(frozen=True)
class AuthorityFiles:
    """Where ``init_authority`` wrote the CA and the SuperLink certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_names: tuple[str, ...]


@dataclass(frozen=True)
class SiteKeyFiles:
    """Where ``add_site`` wrote one hospital's node-authentication key pair."""

    site_id: str
    private_key: Path
    public_key: Path
    ledger_key: Path  # Ed25519 key signing the site's privacy ledger (node config ledger-key)

    @property
    def ledger_public_key(self) -> Path:
        """The ledger key's public half, for ``medfed privacy verify --public-key``."""
        return public_key_path(self.ledger_key)


def site_key_paths(directory: Path, site_id: str) -> SiteKeyFiles:
    """The key files of ``site_id`` under a certificate directory."""
    sites = directory / SITES_DIR
    return SiteKeyFiles(
        site_id, sites / f"{site_id}.key", sites / f"{site_id}.pub", sites / f"{site_id}-ledger.pem"
    )


def parse_server_names(value: str, *, include_loopback: bool = True) -> tuple[str, ...]:
    """Split ``HOST[,IP…]`` into validated names (DNS names lower-cased, IPs normalised)."""
    names: list[str] = []
    extra = LOOPBACK_NAMES if include_loopback else ()
    for raw in [*value.split(","), *extra]:
        name = raw.strip().lower()
        if not name:
            continue
        try:
            name = str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            labels = name.rstrip(".").split(".")
            if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
                raise CertificateError(
                    f"--server-name: '{raw.strip()}' is neither a DNS name nor an IP address"
                ) from None
            name = name.rstrip(".")
        if name not in names:
            names.append(name)
    if not names:
        raise CertificateError("--server-name needs at least one host name or IP address")
    return tuple(names)


def _subject_alt_names(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medfed federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _build_ca(key: ec.EllipticCurvePrivateKey, days: int) -> x509.Certificate:
    name = _name("medfed federation CA")
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA384())
    )


def _build_server(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Sequence[str],
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def _refuse_existing(paths: Iterable[Path]) -> None:
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise CertificateError(
            f"refusing to overwrite {', '.join(existing)}: move it away first "
            "(replacing a key means re-distributing certificates or re-registering the site)"
        )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` and write ``data``; fail if it already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or widened nothing else
        os.write(fd, data)
    finally:
        os.close(fd)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise CertificateError(f"{directory} exists and is not a directory")
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)


def init_authority(
    directory: Path,
    server_names: Sequence[str],
    *,
    ca_days: int = CA_DAYS,
    server_days: int = SERVER_DAYS,
) -> AuthorityFiles:
    """Create the CA and the SuperLink certificate in ``directory`` (never overwrites)."""
    if not server_names:
        raise CertificateError("at least one server name is needed")
    files = AuthorityFiles(
        ca_cert=directory / CA_CERT,
        ca_key=directory / CA_KEY,
        server_cert=directory / SERVER_CERT,
        server_key=directory / SERVER_KEY,
        server_names=tuple(server_names),
    )
    _refuse_existing([files.ca_cert, files.ca_key, files.server_cert, files.server_key])
    _make_dir(directory)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _build_ca(ca_key, ca_days)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _build_server(server_key, ca_key, ca_cert, server_names, server_days)
    _write_new(files.ca_key, _private_pem(ca_key), PRIVATE_MODE)
    _write_new(files.server_key, _private_pem(server_key), PRIVATE_MODE)
    _write_new(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    _write_new(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return files


def check_site_id(site_id: str) -> str:
    """A site id usable as a file name and node name (lower case, digits, ``.-_``)."""
    if not _SITE_ID.match(site_id):
        raise CertificateError(
            f"site id '{site_id}' must be 1-63 characters of a-z, 0-9, '.', '-' or '_' "
            "and start with a letter or digit"
        )
    return site_id


def add_site(directory: Path, site_id: str) -> SiteKeyFiles:
    """Create ``site_id``'s ECDSA P-384 node key pair and its Ed25519 ledger key pair
    under ``directory/sites/``."""
    files = site_key_paths(directory, check_site_id(site_id))
    _refuse_existing(
        [files.private_key, files.public_key, files.ledger_key, files.ledger_public_key]
    )
    _make_dir(directory)
    _make_dir(directory / SITES_DIR)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_new(files.private_key, private, PRIVATE_MODE)
    _write_new(files.public_key, public + f" medfed-site:{site_id}\n".encode(), PUBLIC_MODE)
    create_signing_key(files.ledger_key)
    return files
