"""``medfed certs``: CA, SuperLink certificate and node keys in the formats Flower reads."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from common.signing import load_public_key, load_signing_key
from deploy.certs import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CertificateError,
    parse_server_names,
    site_key_paths,
)
from medfed.cli import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_and_a_server_certificate_for_every_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"

    code = main(["certs", "init", str(certs), "--server-name", "fl.example.org,203.0.113.7"])

    assert code == 0
    ca = x509.load_pem_x509_certificate((certs / CA_CERT).read_bytes())
    server = x509.load_pem_x509_certificate((certs / SERVER_CERT).read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"fl.example.org", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("203.0.113.7"),
        ipaddress.ip_address("127.0.0.1"),
    }
    assert _mode(certs / CA_KEY) == _mode(certs / SERVER_KEY) == 0o600
    assert _mode(certs) == 0o700
    out = capsys.readouterr().out
    assert "PRIVATE KEY" not in out
    assert (certs / SERVER_KEY).read_text().splitlines()[1] not in out
    # Regression: the closing hint told the coordinator to run add-site in its own certs
    # folder, i.e. to make the hospitals' private keys, which the README keeps at the sites
    assert f"add-site {certs}" not in out
    assert "on its own machine" in out and "only its .pub file" in out


def test_add_site_writes_an_openssh_p384_key_pair_flower_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"

    code = main(["certs", "add-site", str(certs), "hospital-a"])

    assert code == 0
    files = site_key_paths(certs, "hospital-a")
    private = load_ssh_private_key(files.private_key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    # the public key is what `flwr supernode register` loads, and it matches the private key
    assert try_load_public_key(files.public_key) == public_key_to_bytes(private.public_key())
    assert _mode(files.private_key) == 0o600
    out = capsys.readouterr().out
    assert "flwr supernode register" in out
    assert "PRIVATE KEY" not in out
    assert files.private_key.read_text().splitlines()[1] not in out


def test_add_site_writes_an_ed25519_ledger_key_next_to_the_node_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"

    code = main(["certs", "add-site", str(certs), "hospital-a"])

    assert code == 0
    files = site_key_paths(certs, "hospital-a")
    assert files.ledger_key.parent == files.private_key.parent
    private = load_signing_key(files.ledger_key)
    public = load_public_key(files.ledger_public_key)
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()
    assert _mode(files.ledger_key) == 0o600
    out = capsys.readouterr().out
    assert str(files.ledger_public_key) in out and "ledger-key" in out
    assert "PRIVATE KEY" not in out


def test_existing_keys_are_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "init", str(certs), "--server-name", "localhost"]) == 0
    assert main(["certs", "add-site", str(certs), "hospital-a"]) == 0
    ca_key = (certs / CA_KEY).read_bytes()
    site_key = site_key_paths(certs, "hospital-a").private_key.read_bytes()
    capsys.readouterr()

    again_init = main(["certs", "init", str(certs), "--server-name", "localhost"])
    again_site = main(["certs", "add-site", str(certs), "hospital-a"])

    assert again_init == again_site == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(
        e.startswith("medfed: error: refusing to overwrite") for e in errors
    )
    assert (certs / CA_KEY).read_bytes() == ca_key
    assert site_key_paths(certs, "hospital-a").private_key.read_bytes() == site_key


@pytest.mark.parametrize("bad", ["Hospital A", "../evil", "", ".hidden", "a/b"])
def test_bad_site_ids_are_refused_with_one_line(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "add-site", str(tmp_path), bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medfed: error: site id") and err.count("\n") == 1
    assert not (tmp_path / "sites").exists()


def test_server_names_are_validated_and_normalised() -> None:
    assert parse_server_names("FL.Example.org., 10.0.0.1", include_loopback=False) == (
        "fl.example.org",
        "10.0.0.1",
    )
    assert parse_server_names("localhost") == ("localhost", "127.0.0.1")
    with pytest.raises(CertificateError, match="neither a DNS name nor an IP"):
        parse_server_names("bad_name!")
    with pytest.raises(CertificateError, match="at least one"):
        parse_server_names(" , ", include_loopback=False)
