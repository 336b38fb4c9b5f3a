"""Throw-away PKI for a loopback cluster, made with the ``openssl`` command-line tool (ECDSA P-256)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import StartupError

SERVING_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # service-account signing key (private)
    sa_pub: Path  # its public key, for token verification


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise StartupError("the `openssl` command is required to create the test cluster's certificates")
    result = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StartupError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _key(path: Path, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=cwd)
    path.chmod(0o600)


def _signed_cert(
    name: str, subject: str, extensions: list[str], *, ca_cert: Path, ca_key: Path, cwd: Path, days: int
) -> tuple[Path, Path]:
    key = cwd / f"{name}.key"
    csr = cwd / f"{name}.csr"
    cert = cwd / f"{name}.crt"
    ext = cwd / f"{name}.ext"
    _key(key, cwd)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=cwd)
    ext.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", str(days), "-sha256", "-extfile", str(ext), "-out", str(cert),
        cwd=cwd,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key


def create_pki(directory: Path, *, days: int = 30) -> Pki:
    """CA, API-server serving cert, admin client cert (O=system:masters) and a service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = directory / "ca.key"
    ca_cert = directory / "ca.crt"
    _key(ca_key, directory)
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=spotq-testenv-ca", "-days", str(days),
        "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", "-out", str(ca_cert),
        cwd=directory,
    )  # fmt: skip
    serving_cert, serving_key = _signed_cert(
        "apiserver",
        "/CN=kube-apiserver",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(SERVING_SANS),
        ],
        ca_cert=ca_cert,
        ca_key=ca_key,
        cwd=directory,
        days=days,
    )
    admin_cert, admin_key = _signed_cert(
        "admin",
        "/O=system:masters/CN=spotq-testenv-admin",
        [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=clientAuth",
        ],
        ca_cert=ca_cert,
        ca_key=ca_key,
        cwd=directory,
        days=days,
    )
    sa_key = directory / "sa.key"
    sa_pub = directory / "sa.pub"
    _key(sa_key, directory)
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub), cwd=directory)
    return Pki(ca_cert, ca_key, serving_cert, serving_key, admin_cert, admin_key, sa_key, sa_pub)
