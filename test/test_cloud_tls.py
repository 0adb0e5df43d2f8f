"""Transport (issue 15 item 7): `scfl cloud serve` speaks HTTPS with the configured
certificate, robots verify it against a custom CA, and plain HTTP is refused off loopback
(server and client side) unless explicitly allowed."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys

import pytest

from cloud_fixtures import RobotHelper
from cloud_fixtures import fleet_key  # noqa: F401  (fixture)
from scfl_cloud.client import CloudClient, CloudUnavailable

pytestmark = pytest.mark.timeout(180)


def _make_ca_and_server_cert(directory):
    """A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("scfl test CA")).issuer_name(name("scfl test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: directory / f"{n}.pem" for n in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def test_https_with_a_test_ca(tmp_path, fleet_key):
    from scfl_cloud.testing import CloudServer

    pki = _make_ca_and_server_cert(tmp_path)
    with CloudServer(tmp_path / "cloud", tls=(pki["cert"], pki["key"], pki["ca"])) as server:
        assert server.url.startswith("https://")
        admin = server.admin_client()  # trusts the test CA
        assert admin.healthz()["status"] == "ok"
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("tls", ["over https"], skill_id="skill_tls")["skill_id"]
        bots = [RobotHelper(f"tls-{i}", admin, fleet_key, seed=i) for i in range(3)]
        rid = admin.open_round(skill, 0, quorum=3, deadline_s=120, secure_aggregation=False)["round_id"]
        for bot in bots:
            server.client(bot.token).upload_delta(bot.token, bot.delta(skill, rid)[1])
        assert admin.wait_for_round(rid, timeout=60)["state"] == "published"
        assert server.client(bots[0].token).download_aggregate(rid)  # verified TLS + verified signature
        # a robot that does not trust the CA refuses the connection (no silent fallback)
        with pytest.raises(CloudUnavailable) as err:
            CloudClient(server.url).healthz()
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.detail or "certificate" in err.value.detail.lower()
        # plain HTTP on the HTTPS port gets nowhere
        with pytest.raises(CloudUnavailable):
            CloudClient(server.url.replace("https://", "http://")).healthz()


def test_plain_http_only_on_loopback(tmp_path):
    for url in ("http://10.1.2.3:8000", "http://cloud.example.com", "ftp://127.0.0.1"):
        with pytest.raises(ValueError):
            CloudClient(url)
    CloudClient("http://127.0.0.1:8000").close()
    CloudClient("http://[::1]:8000").close()
    CloudClient("http://10.1.2.3:8000", insecure_http=True).close()
    CloudClient("https://cloud.example.com").close()
    # the server refuses to bind plain HTTP to a non-loopback address
    r = subprocess.run([sys.executable, "-m", "scfl_cloud.server", "--storage", str(tmp_path / "c"),
                        "--host", "0.0.0.0", "--port", "1", "--admin-token", "z" * 20],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "refusing plain HTTP" in r.stderr and "Traceback" not in r.stderr
