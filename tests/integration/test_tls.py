"""TLS and mutual TLS end to end: a real controller subprocess (with Ray), a real
agent subprocess and the caller client, over certificates made here.

One throwaway PKI per module (CA, server cert for 127.0.0.1/localhost, client
cert, plus an unrelated CA). The ``controller`` fixture is module-scoped and
parametrized: ``tls`` (server certificate only) and ``mtls`` (``--tls-ca`` on
the controller: client certificates required). pytest runs every test of one
parameter before starting the next, so at most one controller (and one Ray)
runs at a time and the file starts exactly two.

Readiness is polled with deadlines (the controller's ``controller.json``, the
agent appearing as connected), never a fixed sleep. Every process starts in
its own session and its whole process group is killed in teardown.
"""
from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("grpc")
pytest.importorskip("ray", reason="the controller needs ray (pip install 'fleetmeter[controller]')")
pytest.importorskip("onnxruntime", reason="the agent under test serves onnxruntime")

from fleetmeter._net import TlsFiles  # noqa: E402
from fleetmeter.client import FleetClient  # noqa: E402
from fleetmeter.errors import Unavailable  # noqa: E402
from fleetmeter.local import wait_until  # noqa: E402

API_TOKEN = "tls-test-api-token"
AGENT_TOKEN = "tls-test-agent-token"
CONTROLLER_START_S = 120.0
AGENT_CONNECT_S = 60.0
CALL_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- helpers
@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMETER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def spawn(argv: list, log_path: Path, env: Optional[dict] = None) -> Proc:
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env or _env(), start_new_session=True)
    return Proc(popen, log_path)


def kill_group(proc: Proc, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group (a clean stop also stops Ray), then SIGKILL whatever is left of it."""
    try:
        pgid = os.getpgid(proc.popen.pid)
    except ProcessLookupError:
        pgid = proc.popen.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------- PKI
@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str          # a CA that signed nothing the controller presents


def _pki_openssl(d: Path, openssl: str) -> Pki:
    def run(*args: str) -> None:
        proc = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=fleetmeter test {ca}")
    (d / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "fleetmeter-test-client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return _pki_paths(d)


def _pki_cryptography(d: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make_ca(stem: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"fleetmeter test {stem}"))
                .issuer_name(name(f"fleetmeter test {stem}")).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        (d / f"{stem}.key").write_bytes(key_pem(key))
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    ca_key, ca_cert = make_ca("ca")
    make_ca("other-ca")
    for stem, cn, usage, san in (
            ("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            ("client", "fleetmeter-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (d / f"{stem}.key").write_bytes(key_pem(key))
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return _pki_paths(d)


def _pki_paths(d: Path) -> Pki:
    return Pki(ca=str(d / "ca.crt"), server_cert=str(d / "server.crt"), server_key=str(d / "server.key"),
               client_cert=str(d / "client.crt"), client_key=str(d / "client.key"),
               other_ca=str(d / "other-ca.crt"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl = shutil.which("openssl")
    if openssl:
        return _pki_openssl(d, openssl)
    if importlib.util.find_spec("cryptography") is None:
        pytest.skip("neither the openssl CLI nor the 'cryptography' package is available to make certificates")
    return _pki_cryptography(d)


# ---------------------------------------------------------------- controller
@dataclass
class Running:
    mode: str                      # "tls" | "mtls"
    address: str
    pki: Pki
    proc: Proc
    root: Path

    @property
    def mutual(self) -> bool:
        return self.mode == "mtls"

    def caller_tls(self) -> TlsFiles:
        """What a well-configured caller passes for this controller."""
        if self.mutual:
            return TlsFiles(ca=self.pki.ca, cert=self.pki.client_cert, key=self.pki.client_key)
        return TlsFiles(ca=self.pki.ca)

    def client(self, tls: Optional[TlsFiles] = None, address: Optional[str] = None) -> FleetClient:
        return FleetClient(address or self.address, API_TOKEN, tls, timeout_s=CALL_TIMEOUT_S)


@pytest.fixture(scope="module", params=["tls", "mtls"])
def controller(request, pki, tmp_path_factory):
    mode = request.param
    root = tmp_path_factory.mktemp(f"controller-{mode}")
    data_dir = root / "data"
    argv = [sys.executable, "-m", "fleetmeter.cli", "controller", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), "--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
            "--agent-token", AGENT_TOKEN, "--api-token", API_TOKEN, "--heartbeat-s", "1"]
    if mode == "mtls":
        argv += ["--tls-ca", pki.ca]
    proc = spawn(argv, root / "controller.log")
    addr_file = data_dir / "controller.json"
    try:
        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"the controller exited ({proc.popen.returncode}) during start-up:\n"
                                   + proc.log_tail())
            return addr_file.exists() and addr_file.stat().st_size > 0

        try:
            wait_until(ready, CONTROLLER_START_S, f"the {mode} controller to write {addr_file}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{proc.log_tail()}") from None
        address = json.loads(addr_file.read_text())["address"]
        yield Running(mode, address, pki, proc, root)
    finally:
        kill_group(proc)


# ---------------------------------------------------------------- tests
def test_client_lists_devices_over_tls(controller):
    with controller.client(controller.caller_tls()) as c:
        c.wait_ready(CALL_TIMEOUT_S)
        devices = c.list_devices()
    assert isinstance(devices, list)


def test_hostname_from_dns_san(controller):
    """The server certificate names DNS:localhost as well as IP:127.0.0.1."""
    port = controller.address.rpartition(":")[2]
    with controller.client(controller.caller_tls(), address=f"localhost:{port}") as c:
        assert isinstance(c.list_devices(), list)


def test_plaintext_client_is_refused(controller):
    with controller.client(None) as c:
        with pytest.raises(Unavailable):
            c.list_devices()


def test_client_with_wrong_ca_is_refused(controller):
    tls = controller.caller_tls()
    with controller.client(TlsFiles(ca=controller.pki.other_ca, cert=tls.cert, key=tls.key)) as c:
        with pytest.raises(Unavailable):
            c.list_devices()


def test_client_without_client_cert(controller):
    """Server-only TLS accepts a caller with just the CA; mutual TLS refuses it in the handshake."""
    with controller.client(TlsFiles(ca=controller.pki.ca)) as c:
        if controller.mutual:
            with pytest.raises(Unavailable):
                c.list_devices()
        else:
            assert isinstance(c.list_devices(), list)


def test_cli_devices_over_tls(controller):
    """The operator CLI's --tls-* flags (what deploy/tls.md tells people to run)."""
    tls = controller.caller_tls()
    argv = [sys.executable, "-m", "fleetmeter.cli", "devices", "--json", "--controller", controller.address,
            "--tls-ca", tls.ca]
    if tls.cert:
        argv += ["--tls-cert", tls.cert, "--tls-key", tls.key]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**_env(), "FLEETMETER_API_TOKEN": API_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), list)


def test_agent_connects_over_tls(controller):
    name = f"tls-agent-{controller.mode}"
    argv = [sys.executable, "-m", "fleetmeter.agent.cli", "run", "--controller", controller.address,
            "--name", name, "--data-dir", str(controller.root / "agent"), "--runtime", "onnxruntime",
            "--no-power", "--tls-ca", controller.pki.ca]
    if controller.mutual:
        argv += ["--tls-cert", controller.pki.client_cert, "--tls-key", controller.pki.client_key]
    env = {**_env(), "FLEETMETER_AGENT_TOKEN": AGENT_TOKEN}
    agent = spawn(argv, controller.root / "agent.log", env=env)
    try:
        with controller.client(controller.caller_tls()) as c:
            def connected() -> bool:
                if not agent.alive():
                    raise RuntimeError(f"the agent exited ({agent.popen.returncode}):\n" + agent.log_tail())
                return any(d.name == name and d.connected for d in c.list_devices())

            try:
                wait_until(connected, AGENT_CONNECT_S, f"agent {name} to connect over TLS", poll_s=0.25)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\nagent log:\n{agent.log_tail()}\ncontroller log:\n"
                                   f"{controller.proc.log_tail()}") from None
            device = next(d for d in c.list_devices() if d.name == name)
            assert device.state in ("idle", "busy")  # busy: the drift canary measures its platform at connect
            assert any(r.name == "onnxruntime" for r in device.info.runtimes)
    finally:
        kill_group(agent)
