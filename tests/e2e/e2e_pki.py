"""Certificates and kubeconfigs of the e2e cluster: one CA, serving and client certificates, an SA key pair.

Uses the ``cryptography`` package when it is installed and the ``openssl`` command otherwise.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class CertSpec:
    name: str  # file stem: <name>.crt / <name>.key
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


class Pki:
    """Writes everything into ``directory``; ``ca`` is created on construction."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            import cryptography  # noqa: F401

            self._backend: _Backend = _CryptographyBackend()
        except ImportError:
            self._backend = _OpensslBackend()
        self.ca = KeyPair(self.dir / "ca.crt", self.dir / "ca.key")
        self._backend.make_ca(self.ca, "dra-hami-e2e-ca")

    @property
    def backend_name(self) -> str:
        return type(self._backend).__name__

    def issue(self, spec: CertSpec) -> KeyPair:
        pair = KeyPair(self.dir / f"{spec.name}.crt", self.dir / f"{spec.name}.key")
        self._backend.make_cert(self.ca, pair, spec)
        return pair

    def service_account_keys(self) -> KeyPair:
        """An RSA key pair for service-account tokens: ``cert`` is the public key (PEM), ``key`` the private key."""
        pair = KeyPair(self.dir / "sa.pub", self.dir / "sa.key")
        self._backend.make_rsa_pair(pair)
        return pair


def write_kubeconfig(path: Path, server: str, ca: Path, client: KeyPair, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class _Backend:
    def make_ca(self, ca: KeyPair, common_name: str) -> None:
        raise NotImplementedError

    def make_cert(self, ca: KeyPair, pair: KeyPair, spec: CertSpec) -> None:
        raise NotImplementedError

    def make_rsa_pair(self, pair: KeyPair) -> None:
        raise NotImplementedError


_VALIDITY = datetime.timedelta(days=2)


class _CryptographyBackend(_Backend):
    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.x509, self.hashes, self.serialization = x509, hashes, serialization
        self.ec, self.rsa, self.eku, self.oid = ec, rsa, ExtendedKeyUsageOID, NameOID

    def _key(self):
        return self.ec.generate_private_key(self.ec.SECP256R1())

    def _write_key(self, key, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                self.serialization.Encoding.PEM,
                self.serialization.PrivateFormat.PKCS8,
                self.serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def _name(self, common_name: str, organizations: tuple[str, ...] = ()):
        attrs = [self.x509.NameAttribute(self.oid.ORGANIZATION_NAME, org) for org in organizations]
        attrs.append(self.x509.NameAttribute(self.oid.COMMON_NAME, common_name))
        return self.x509.Name(attrs)

    def _builder(self, subject, issuer, public_key):
        now = datetime.datetime.now(datetime.UTC)
        return (
            self.x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(self.x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + _VALIDITY)
        )

    def make_ca(self, ca: KeyPair, common_name: str) -> None:
        key = self._key()
        name = self._name(common_name)
        cert = (
            self._builder(name, name, key.public_key())
            .add_extension(self.x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                self.x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(self.x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, self.hashes.SHA256())
        )
        self._write_key(key, ca.key)
        ca.cert.write_bytes(cert.public_bytes(self.serialization.Encoding.PEM))

    def make_cert(self, ca: KeyPair, pair: KeyPair, spec: CertSpec) -> None:
        ca_key = self.serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
        ca_cert = self.x509.load_pem_x509_certificate(ca.cert.read_bytes())
        key = self._key()
        usages = []
        if spec.server:
            usages.append(self.eku.SERVER_AUTH)
        if spec.client:
            usages.append(self.eku.CLIENT_AUTH)
        builder = (
            self._builder(self._name(spec.common_name, spec.organizations), ca_cert.subject, key.public_key())
            .add_extension(self.x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                self.x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(self.x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                self.x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
            )
        )
        alt = [self.x509.DNSName(d) for d in spec.dns_names]
        alt += [self.x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
        if alt:
            builder = builder.add_extension(self.x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, self.hashes.SHA256())
        self._write_key(key, pair.key)
        pair.cert.write_bytes(cert.public_bytes(self.serialization.Encoding.PEM))

    def make_rsa_pair(self, pair: KeyPair) -> None:
        key = self.rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write_key(key, pair.key)
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                self.serialization.Encoding.PEM, self.serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


class _OpensslBackend(_Backend):
    @staticmethod
    def _run(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")

    @staticmethod
    def _subject(common_name: str, organizations: tuple[str, ...] = ()) -> str:
        return "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"

    def make_ca(self, ca: KeyPair, common_name: str) -> None:
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca.key))
        self._run(
            "req", "-x509", "-new", "-key", str(ca.key), "-sha256", "-days", "2", "-out", str(ca.cert),
            "-subj", self._subject(common_name),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip

    def make_cert(self, ca: KeyPair, pair: KeyPair, spec: CertSpec) -> None:
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pair.key))
        usages = [u for u, on in (("serverAuth", spec.server), ("clientAuth", spec.client)) if on]
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={','.join(usages)}",
        ]
        alt = [f"DNS:{d}" for d in spec.dns_names] + [f"IP:{ip}" for ip in spec.ip_addresses]
        if alt:
            lines.append(f"subjectAltName={','.join(alt)}")
        with tempfile.TemporaryDirectory() as tmp:
            csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
            ext.write_text("\n".join(lines) + "\n")
            self._run("req", "-new", "-key", str(pair.key), "-out", str(csr),
                      "-subj", self._subject(spec.common_name, spec.organizations))  # fmt: skip
            self._run(
                "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
                "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(pair.cert),
            )  # fmt: skip
        pair.key.chmod(0o600)

    def make_rsa_pair(self, pair: KeyPair) -> None:
        self._run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pair.key))
        self._run("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
        pair.key.chmod(0o600)
