"""A real nginx in front of the simulator, as production runs OpenAlgo: TLS with a certificate
made here, HTTP basic auth, ``/`` proxied to the REST port and ``/ws`` to the WebSocket port.

``nginx_or_skip`` finds nginx (Debian's package): missing, the test is skipped with the reason,
except when the ``CI`` environment variable is set, where it fails (``.ci/run`` installs it).
``make_tls`` writes a CA and a server certificate for 127.0.0.1/localhost; ``Nginx`` runs one
test-owned nginx (no daemon, no master process, every path inside the test's directory) and
stops it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


def nginx_or_skip() -> str:
    """The nginx executable; skips the test when there is none (fails it under ``CI``)."""
    path = shutil.which("nginx") or next((p for p in NGINX_PLACES if os.access(p, os.X_OK)),
                                         None)
    if path is not None:
        return path
    reason = "no nginx (looked on PATH and in /usr/sbin; apt-get install nginx-light)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the proxy test must run", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class Tls:
    ca: Path  # the CA certificate (PEM): what the engine's ca_bundle names
    cert: Path  # the server certificate, for 127.0.0.1 and localhost, signed by the CA
    key: Path


def make_tls(folder: Path) -> Tls:
    """A fresh CA and a server certificate it signed, valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nifty-engine test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return tls


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry nginx accepts: ``{SHA}`` and the base64 of the password's SHA-1."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
{temp_paths}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        auth_basic "OpenAlgo";
        auth_basic_user_file {htpasswd};
        location / {{
            proxy_pass http://127.0.0.1:{rest_port};
            proxy_set_header Host $host;
        }}
        location /ws {{
            proxy_pass http://127.0.0.1:{ws_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
    server {{
        listen 127.0.0.1:{dead_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ proxy_pass http://127.0.0.1:{nothing_port}; }}
    }}
}}
"""

# Modules Debian's nginx may be built with, whose temp paths default to /var/lib/nginx.
_TEMP_MODULES = ("fastcgi", "uwsgi", "scgi")


class Nginx:
    """One test-owned nginx: ``url`` (https, basic auth) proxies ``/`` to ``rest_port`` and
    ``/ws`` to ``ws_port``; ``dead_url`` proxies to a port nobody listens on (502)."""

    def __init__(self, folder: Path, *, rest_port: int, ws_port: int, tls: Tls, user: str,
                 password: str) -> None:
        self.binary = nginx_or_skip()
        self.prefix = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port, self.dead_port = free_port(), free_port()
        htpasswd = folder / "htpasswd"
        htpasswd.write_text(htpasswd_line(user, password))
        built = subprocess.run([self.binary, "-V"], capture_output=True, text=True,
                               check=False).stderr
        temp_paths = "\n".join(f"    {m}_temp_path {folder}/{m};" for m in _TEMP_MODULES
                               if f"--without-http_{m}_module" not in built)
        self.conf = folder / "nginx.conf"
        self.conf.write_text(_CONF.format(
            prefix=folder, temp_paths=temp_paths, port=self.port, dead_port=self.dead_port,
            nothing_port=free_port(), cert=tls.cert, key=tls.key, htpasswd=htpasswd,
            rest_port=rest_port, ws_port=ws_port))
        self.url = f"https://127.0.0.1:{self.port}"
        self.ws_url = f"wss://127.0.0.1:{self.port}/ws"
        self.dead_url = f"https://127.0.0.1:{self.dead_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Nginx:
        self._process = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e",
             str(self.prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}: "
                                   f"{self.errors()}")
            if all(_listening(port) for port in (self.port, self.dead_port)):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout} s: {self.errors()}")

    def errors(self) -> str:
        log = self.prefix / "error.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self._process is not None and self._process.stderr is not None \
                and self._process.poll() is not None:
            text += self._process.stderr.read().decode(errors="replace")
        return text.strip()[-2000:]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
