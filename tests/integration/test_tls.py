"""TLS and mutual TLS end to end: a real controller subprocess (with Ray), a real
agent subprocess and the caller client, over certificates made here. The
processes are started by :class:`fleetmeter.local_fleet.LocalFleet` (the harness every
integration test and ``fleetmeter demo`` use), with the ``--tls-*`` flags added.

One throwaway PKI per module (CA, server cert for 127.0.0.1/localhost, client
cert, plus an unrelated CA). The ``controller`` fixture is module-scoped and
parametrized: ``tls`` (server certificate only) and ``mtls`` (``--tls-ca`` on
the controller: client certificates required). pytest runs every test of one
parameter before starting the next, so at most one controller (and one Ray)
runs at a time and the file starts exactly two.

Readiness is LocalFleet's (the controller's address file, then its health check
over TLS; the agent appearing as connected), never a fixed sleep; LocalFleet
stops every process it started in teardown.
"""
from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import json
import shutil
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
from fleetmeter.local_fleet import LocalFleet  # noqa: E402

API_TOKEN = "tls-test-api-token"
AGENT_TOKEN = "tls-test-agent-token"
CONTROLLER_START_S = 120.0
AGENT_CONNECT_S = 60.0
CALL_TIMEOUT_S = 10.0


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
def _caller_tls(pki: Pki, mutual: bool) -> TlsFiles:
    """What a well-configured caller passes: the CA, plus a client certificate under mutual TLS."""
    return TlsFiles(ca=pki.ca, cert=pki.client_cert, key=pki.client_key) if mutual else TlsFiles(ca=pki.ca)


@dataclass
class Running:
    mode: str                      # "tls" | "mtls"
    pki: Pki
    fleet: LocalFleet

    @property
    def mutual(self) -> bool:
        return self.mode == "mtls"

    @property
    def address(self) -> str:
        return self.fleet.address

    def caller_tls(self) -> TlsFiles:
        return _caller_tls(self.pki, self.mutual)

    def client(self, tls: Optional[TlsFiles] = None, address: Optional[str] = None) -> FleetClient:
        return FleetClient(address or self.address, API_TOKEN, tls, timeout_s=CALL_TIMEOUT_S)


@pytest.fixture(scope="module", params=["tls", "mtls"])
def controller(request, pki, tmp_path_factory):
    mode = request.param
    fleet = LocalFleet(tmp_path_factory.mktemp(f"fleet-{mode}"), agent_token=AGENT_TOKEN, api_token=API_TOKEN,
                       heartbeat_s=1.0, tls=_caller_tls(pki, mode == "mtls"))
    tls_args = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key]
    if mode == "mtls":
        tls_args += ["--tls-ca", pki.ca]
    try:
        fleet.start_controller(None, CONTROLLER_START_S, *tls_args)
        yield Running(mode, pki, fleet)
    finally:
        fleet.close()


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


def test_plaintext_client_is_told_tls_is_the_likely_cause(controller):
    """gRPC says only 'Socket closed' to a plain-text client at a TLS port: fails if the error does not point
    at TLS and the flag or variable that turns it on (the CLI prints this message)."""
    with controller.client(TlsFiles()) as c:  # TlsFiles(): plain text, whatever the environment says
        with pytest.raises(Unavailable, match="Socket closed") as info:
            c.list_devices()
    assert "the controller may be using TLS: pass --tls-ca" in str(info.value)
    assert "FLEETMETER_TLS_CA" in str(info.value)


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
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=controller.fleet.env())
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), list)


@pytest.mark.parametrize("how", ["flags", "env"])
def test_agent_connects_over_tls(controller, how):
    """Fails if an agent cannot reach a TLS controller with --tls-* flags, or with FLEETMETER_TLS_* alone."""
    name = f"tls-agent-{controller.mode}-{how}"
    files = {"--tls-ca": controller.pki.ca}
    if controller.mutual:
        files.update({"--tls-cert": controller.pki.client_cert, "--tls-key": controller.pki.client_key})
    args = ["--runtime", "onnxruntime", "--no-power"]
    if how == "flags":
        args += [x for flag, path in files.items() for x in (flag, path)]
    env = {f"FLEETMETER_TLS_{flag[6:].upper()}": path for flag, path in files.items()} if how == "env" else None
    controller.fleet.start_agent(name, *args, env=env)
    try:
        controller.fleet.wait_agents_connected([name], AGENT_CONNECT_S)
        with controller.client(controller.caller_tls()) as c:
            device = next(d for d in c.list_devices() if d.name == name)
        assert device.state in ("idle", "busy")  # busy: the drift canary measures its platform at connect
        assert any(r.name == "onnxruntime" for r in device.info.runtimes)
    finally:
        controller.fleet.stop_agent(name)


# ---------------------------------------------------------------- TLS from the environment alone
def _tls_env(controller, tls: Optional[TlsFiles] = None) -> dict:
    """FLEETMETER_* for a caller of this controller: its address, token and TLS files, no flag needed."""
    tls = tls or controller.caller_tls()
    env = {"FLEETMETER_CONTROLLER": controller.address, "FLEETMETER_API_TOKEN": API_TOKEN,
           "FLEETMETER_TLS_CA": tls.ca}
    if tls.cert:
        env.update(FLEETMETER_TLS_CERT=tls.cert, FLEETMETER_TLS_KEY=tls.key)
    return env


def _fleetmeter(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_cli_commands_use_the_tls_variables(controller):
    """Fails if a caller command needs --tls-* flags when FLEETMETER_TLS_* name the files, or if a variable wins
    over the flag given for it."""
    env = {**controller.fleet.env(), **_tls_env(controller)}
    for command in (["devices"], ["models", "list"], ["results"], ["predictors", "list"]):
        proc = _fleetmeter(env, *command, "--json")
        assert proc.returncode == 0, (command, proc.stderr)
        assert isinstance(json.loads(proc.stdout), list)
    wrong_ca = {**env, "FLEETMETER_TLS_CA": controller.pki.other_ca}
    refused = _fleetmeter(wrong_ca, "devices", "--json")
    assert refused.returncode == 1 and "Unavailable" in refused.stderr
    assert _fleetmeter(wrong_ca, "devices", "--json", "--tls-ca", controller.pki.ca).returncode == 0


def test_python_api_uses_the_tls_variables(controller, monkeypatch):
    """`fleetmeter.predict()` and `Client()` with no argument reach the TLS controller: this one has no predictor,
    so predict answers FailedPrecondition from the servicer (a channel that failed the handshake would be
    Unavailable)."""
    import fleetmeter
    from fleetmeter.errors import FailedPrecondition
    from fleetmeter.modeler.builtin import get_builtin_model

    for key, value in _tls_env(controller).items():
        monkeypatch.setenv(key, value)
    with fleetmeter.Client() as c:
        assert isinstance(c.list_devices(), list)
    with pytest.raises(FailedPrecondition, match="fleetmeter train"):
        fleetmeter.predict(get_builtin_model("tiny_mlp", "onnx").path)
