#!/usr/bin/env python3
"""ua_peer: Python asyncua (opcua-asyncio) as an OPC UA interop peer for the certvault tests.

One command-line tool with five sub-commands (gen-cert, gen-user-cert, client-endpoints, client-session, server).
Every sub-command prints exactly one JSON object on stdout (the server prints one "ready" line, then nothing until it
exits); logs go to stderr. Exit code 0 means "ok": true (or an --expect-failure that was met), 1 an unexpected
failure, 2 a usage error. The contract is documented in README.md next to this file; the Rust tests code against it,
so change both together.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import datetime as dt
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("ua_peer")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

POLICIES = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
MODES = ["None", "Sign", "SignAndEncrypt"]
POLICY_URI_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"

NAMESPACE_URI = "urn:certvault:interop:asyncua"
# String NodeIds of the server's demo namespace (namespace index 2, the first one registered after the server's own).
DEMO_NODES = {
    "folder": "ns=2;s=Demo",
    "double": "ns=2;s=Demo.Double",
    "int32": "ns=2;s=Demo.Int32",
    "add": "ns=2;s=Demo.Add",
}

# The test namespace of the interop matrix (namespace index 3, registered right after the demo namespace).
TEST_NAMESPACE_URI = "urn:certvault:test:python"
TEST_NODES = {
    "machine": "ns=3;s=Machine",
    "setpoint": "ns=3;s=Setpoint",
    "counter": "ns=3;s=Counter",
    "blob": "ns=3;s=Blob",
    "machine_add": "ns=3;s=Machine.Add",
}
COUNTER_PERIOD_S = 0.1
# ByteString values longer than this are reported without "base64" (only "len" and "sha256").
MAX_BASE64_BYTES = 65536


# --------------------------------------------------------------------------------------------------------------------
# Output helpers


_emitted = False


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON object as one line on stdout and flush (at most one per process)."""
    global _emitted
    if _emitted:
        log.error("not printed (a JSON object was printed already): %s", obj)
        return
    _emitted = True
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def status_name(code: int) -> str:
    from asyncua.ua import status_codes

    return status_codes.get_name_and_doc(code)[0]


def classify_error(exc: BaseException) -> tuple[str, str]:
    """(error text, OPC UA status name) for any exception raised by asyncua or the OS."""
    from asyncua import ua

    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"{type(exc).__name__}: {exc}", status_name(code)
    if isinstance(exc, ua.uaerrors.UaStatusCodeErrors):
        return str(exc), status_name(exc.codes[0]) if exc.codes else "BadUnexpectedError"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out ({type(exc).__name__})", "BadTimeout"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"{type(exc).__name__}: {exc}", "BadInvalidArgument"
    if isinstance(exc, ConnectionRefusedError):
        return f"{type(exc).__name__}: {exc}", "BadNotConnected"
    if isinstance(exc, (ConnectionError, EOFError)):
        return f"{type(exc).__name__}: {exc}", "BadConnectionClosed"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}", "BadCommunicationError"
    # asyncua reports "connection closed by server" and friends as plain UaError.
    text = f"{type(exc).__name__}: {exc}"
    if "closed" in str(exc).lower():
        return text, "BadConnectionClosed"
    return text, "BadUnexpectedError"


def to_json(value: Any) -> Any:
    """Best-effort conversion of asyncua values to JSON."""
    from asyncua import ua

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes_json(bytes(value))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.QualifiedName):
        return value.to_string()
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.StatusCode):
        return value.name
    if isinstance(value, ua.Variant):
        return to_json(value.Value)
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return value.name
    return str(value)


def bytes_json(data: bytes) -> dict[str, Any]:
    """{"len", "sha256" (hex), "base64" (only up to MAX_BASE64_BYTES)} for a ByteString."""
    out: dict[str, Any] = {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if len(data) <= MAX_BASE64_BYTES:
        out["base64"] = base64.b64encode(data).decode()
    return out


def pattern_bytes(n: int) -> bytes:
    """n bytes 00 01 02 .. ff 00 01 ..: the Blob's initial content and the `*N` ByteString write value."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


# --------------------------------------------------------------------------------------------------------------------
# Certificates


def generate_cert(
    out_dir: Path,
    name: str,
    app_uri: str,
    bits: int = 2048,
    days: int = 365,
    hosts: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
) -> dict[str, str]:
    """Self-signed OPC UA application instance certificate (DER) and its key (PKCS#8 PEM) in out_dir."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri)]
    sans += [x509.DNSName(h) for h in hosts]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path = out_dir / f"{name}.der"
    key_path = out_dir / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return {"cert": str(cert_path), "key": str(key_path), "app_uri": app_uri}


def generate_user_cert(out_dir: Path, name: str, bits: int = 2048, days: int = 365) -> dict[str, str]:
    """Self-signed X.509 user identity certificate (DER) and its key (PKCS#8 PEM) in out_dir.

    CN=name, no subjectAltName (a user has no ApplicationUri), KeyUsage digitalSignature+nonRepudiation+keyEncipherment
    +dataEncipherment, EKU clientAuth, CA=false.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path = out_dir / f"{name}.der"
    key_path = out_dir / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return {"cert": str(cert_path), "key": str(key_path), "subject": f"CN={name}"}


def load_cert_der(path: str) -> bytes:
    """A certificate file (DER or PEM) as DER."""
    from cryptography import x509

    data = Path(path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if data.startswith(b"-----") else x509.load_der_x509_certificate(data)
    return cert.public_bytes(_der())


def cert_app_uri(cert_path: str) -> str | None:
    """The first URI in the certificate's subjectAltName (the ApplicationUri), if any."""
    from cryptography import x509

    data = Path(cert_path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if data.startswith(b"-----") else x509.load_der_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def resolve_own_cert(args: argparse.Namespace, role: str) -> None:
    """Fill args.cert/args.key, generating them with --generate-cert DIR when they were not given."""
    if args.cert and args.key:
        return
    if args.cert or args.key:
        raise UsageError("--cert and --key go together")
    if args.generate_cert:
        app_uri = args.app_uri or f"urn:certvault:interop:asyncua:{role}"
        made = generate_cert(Path(args.generate_cert), f"asyncua-{role}", app_uri, bits=args.key_bits)
        args.cert, args.key = made["cert"], made["key"]
        args.generated = made
        if not args.app_uri:
            args.app_uri = app_uri
        log.info("generated %s certificate %s", role, args.cert)


def generated(args: argparse.Namespace) -> dict[str, Any]:
    """{"generated": {"cert", "key", "app_uri"}} when --generate-cert made the files, else {}."""
    made = getattr(args, "generated", None)
    return {"generated": made} if made else {}


# --------------------------------------------------------------------------------------------------------------------
# Security policy names


class UsageError(Exception):
    pass


def policy_class(name: str):
    from asyncua.crypto import security_policies as sp

    return {
        "None": sp.SecurityPolicyNone,
        "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
        "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
        "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
    }[name]


def mode_value(name: str):
    from asyncua import ua

    return {
        "None": ua.MessageSecurityMode.None_,
        "Sign": ua.MessageSecurityMode.Sign,
        "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
    }[name]


def mode_name(mode: Any) -> str:
    return {1: "None", 2: "Sign", 3: "SignAndEncrypt"}.get(int(mode), str(mode))


def policy_short(uri: str) -> str:
    return uri[len(POLICY_URI_PREFIX) :] if uri.startswith(POLICY_URI_PREFIX) else uri


def check_policy_mode(policy: str, mode: str) -> None:
    if (policy == "None") != (mode == "None"):
        raise UsageError(f"policy {policy} does not go with mode {mode} (None goes only with None)")


# --------------------------------------------------------------------------------------------------------------------
# Client


async def make_client(args: argparse.Namespace):
    from asyncua import Client

    check_policy_mode(args.policy, args.mode)
    client = Client(args.url, timeout=args.timeout)
    client.name = "certvault interop asyncua client"
    if args.policy != "None":
        resolve_own_cert(args, "client")
        if not (args.cert and args.key):
            raise UsageError("--cert and --key (or --generate-cert DIR) are required with a security policy")
        if not args.server_cert:
            raise UsageError("--server-cert is required with a security policy")
        client.application_uri = args.app_uri or cert_app_uri(args.cert) or client.application_uri
        await client.set_security(
            policy_class(args.policy),
            certificate=args.cert,
            private_key=args.key,
            server_certificate=args.server_cert,
            mode=mode_value(args.mode),
        )
    elif args.app_uri:
        client.application_uri = args.app_uri
    return client


async def cmd_client_endpoints(args: argparse.Namespace) -> dict[str, Any]:
    client = await make_client(args)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        try:
            eps = await client.get_endpoints()
        finally:
            try:
                await client.close_secure_channel()
            except Exception:  # the channel result is what matters
                log.debug("close_secure_channel failed", exc_info=True)
    finally:
        client.disconnect_socket()
    return {
        "ok": True,
        **generated(args),
        "endpoints": [
            {
                "url": ep.EndpointUrl,
                "policy": policy_short(ep.SecurityPolicyUri),
                "mode": mode_name(ep.SecurityMode),
                "security_level": ep.SecurityLevel,
                "server_certificate_len": len(ep.ServerCertificate or b""),
                "user_tokens": [t.TokenType.name for t in ep.UserIdentityTokens],
            }
            for ep in eps
        ],
    }


VARIANT_TYPES = [
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double", "String", "ByteString", "NodeId",
]  # fmt: skip


def parse_typed(text: str) -> Any:
    """'VALUE:TYPE' -> ua.Variant (TYPE one of VARIANT_TYPES)."""
    from asyncua import ua

    value, sep, typ = text.rpartition(":")
    if not sep or typ not in VARIANT_TYPES:
        raise UsageError(f"expected VALUE:TYPE with TYPE in {VARIANT_TYPES}, got {text!r}")
    vt = getattr(ua.VariantType, typ)
    if typ == "Boolean":
        if value.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"not a Boolean: {value!r}")
        v: Any = value.lower() in ("true", "1")
    elif typ in ("Float", "Double"):
        v = float(value)
    elif typ == "String":
        v = value
    elif typ == "NodeId":
        try:
            v = ua.NodeId.from_string(value)
        except Exception:
            raise UsageError(f"not a NodeId: {value!r}") from None
    elif typ == "ByteString":
        # hex digits, or *N: N bytes of the Blob pattern (00 01 .. ff 00 ..)
        try:
            v = pattern_bytes(int(value[1:], 0)) if value.startswith("*") else bytes.fromhex(value)
        except ValueError:
            raise UsageError(f"not a ByteString (hex digits or *N): {value!r}") from None
    else:
        v = int(value, 0)
    return ua.Variant(v, vt)


async def cmd_client_session(args: argparse.Namespace) -> dict[str, Any]:
    from asyncua import ua

    client = await make_client(args)
    user = args.user or "anonymous"
    if args.user_cert or args.user_key:
        if not (args.user_cert and args.user_key):
            raise UsageError("--user-cert and --user-key go together")
        if user != "anonymous":
            raise UsageError("--user-cert/--user-key and --user NAME:PASSWORD exclude each other")
        user = f"x509:{args.user_cert}:{args.user_key}"
    if user == "anonymous":
        user_kind = "anonymous"
    elif user.startswith("x509:"):
        user_kind = "x509"
        cert, sep, key = user[len("x509:") :].partition(":")
        if not sep or not cert or not key:
            raise UsageError("--user x509:CERT:KEY")
        for f in (cert, key):
            if not Path(f).is_file():
                raise UsageError(f"no such file: {f}")
        await client.load_client_certificate(cert)
        await client.load_private_key(Path(key))
    else:
        user_kind = "username"
        name, sep, password = user.partition(":")
        if not sep or not name:
            raise UsageError("--user anonymous | NAME:PASSWORD | x509:CERT:KEY")
        client.set_user(name)
        client.set_password(password)

    # Check every operation's syntax before connecting.
    for op, spec in args.ops or []:
        if op == "write":
            parse_write(spec)
        elif op == "call":
            parse_call(spec)

    out: dict[str, Any] = {"ok": True, **generated(args), "session": {"policy": args.policy, "mode": args.mode, "user": user_kind}}
    first_failure: dict[str, str] | None = None

    await client.connect()
    results: list[dict[str, Any]] = []
    out["results"] = results
    try:
        for op, spec in args.ops or []:
            entry: dict[str, Any] = {"op": op}
            results.append(entry)
            try:
                if op == "read":
                    entry["node"] = spec
                    dv = await client.get_node(spec).read_data_value()
                    entry.update(ok=True, value=to_json(dv.Value.Value), type=dv.Value.VariantType.name)
                    entry["status"] = dv.StatusCode.name
                elif op == "write":
                    nid, variant = parse_write(spec)
                    entry["node"] = nid
                    await client.get_node(nid).write_value(ua.DataValue(variant))
                    entry.update(ok=True, status="Good")
                elif op == "browse":
                    entry["node"] = spec
                    refs = await client.get_node(spec).get_references(
                        refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
                    )
                    entry.update(ok=True, status="Good", references=[
                        {
                            "node_id": r.NodeId.to_string(),
                            "browse_name": r.BrowseName.to_string(),
                            "display_name": r.DisplayName.Text,
                            "node_class": r.NodeClass.name,
                        }
                        for r in refs
                    ])  # fmt: skip
                elif op == "call":
                    obj, method, call_args = parse_call(spec)
                    entry.update(object=obj, method=method)
                    res = await client.get_node(obj).call_method(ua.NodeId.from_string(method), *call_args)
                    outputs = res if isinstance(res, list) else ([] if res is None else [res])
                    entry.update(ok=True, status="Good", outputs=to_json(outputs))
                elif op == "subscribe":
                    entry["node"] = spec
                    entry.update(await subscribe(client, spec, args))
            except UsageError:
                raise
            except Exception as exc:
                entry["ok"] = False
                entry["error"], entry["status"] = classify_error(exc)
            if not entry.get("ok") and first_failure is None:
                first_failure = {"error": entry["error"], "status": entry["status"]}
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), timeout=args.timeout)
        except Exception:
            log.warning("disconnect failed", exc_info=True)
    if first_failure is not None:
        out["ok"] = False
        out.update(first_failure)
    return out


async def subscribe(client: Any, nid: str, args: argparse.Namespace) -> dict[str, Any]:
    """Subscribe to one node's value and wait for args.changes data changes."""
    changes: list[Any] = []
    done = asyncio.Event()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            changes.append(to_json(val))
            if len(changes) >= args.changes:
                done.set()

        def status_change_notification(self, status: Any) -> None:
            log.warning("subscription status change: %s", status)

    sub = await client.create_subscription(args.publish_interval, Handler())
    try:
        await sub.subscribe_data_change(client.get_node(nid), sampling_interval=args.publish_interval)
        try:
            await asyncio.wait_for(done.wait(), timeout=args.subscribe_timeout)
        except asyncio.TimeoutError:
            return {
                "ok": False,
                "error": f"{len(changes)} of {args.changes} data changes in {args.subscribe_timeout} s",
                "status": "BadTimeout",
                "changes": changes,
                "count": len(changes),
            }
        kept = changes[: args.changes]
        return {"ok": True, "status": "Good", "changes": kept, "count": len(kept)}
    finally:
        try:
            await asyncio.wait_for(sub.delete(), timeout=args.timeout)
        except Exception:
            log.debug("deleting the subscription failed", exc_info=True)


def parse_write(spec: str) -> tuple[str, Any]:
    """'NODEID=VALUE:TYPE' -> (NODEID, Variant). The NodeId is everything before the last '=' ahead of VALUE."""
    head, sep, typ = spec.rpartition(":")
    nid, eq, value = head.rpartition("=")
    if not sep or not eq or not nid:
        raise UsageError(f"--write NODEID=VALUE:TYPE, got {spec!r}")
    return nid, parse_typed(f"{value}:{typ}")


def parse_call(spec: str) -> tuple[str, str, list[Any]]:
    """'OBJECT:METHOD[:VALUE:TYPE,VALUE:TYPE...]' -> (OBJECT, METHOD, [Variant...])."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UsageError(f"--call OBJECT:METHOD[:VALUE:TYPE,...], got {spec!r}")
    call_args = [parse_typed(a) for a in parts[2].split(",")] if len(parts) == 3 and parts[2] else []
    return parts[0], parts[1], call_args


# --------------------------------------------------------------------------------------------------------------------
# Server


class TrustList:
    """Client application certificates the server trusts: exact certificates, or issued by a CA, in a directory.

    The directory is re-read on every check, so a test can add or remove trust while the server runs.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _load(self) -> list[Any]:
        from cryptography import x509

        certs = []
        if self.directory is None:
            return certs
        for p in sorted(self.directory.iterdir()):
            if not p.is_file():
                continue
            data = p.read_bytes()
            try:
                if data.startswith(b"-----"):
                    certs.extend(x509.load_pem_x509_certificates(data))
                else:
                    certs.append(x509.load_der_x509_certificate(data))
            except ValueError:
                log.debug("not a certificate: %s", p)
        return certs

    def status_of(self, der: bytes) -> str | None:
        """None when trusted, otherwise the status name to report."""
        from cryptography import x509

        if self.directory is None:
            return None  # no trust list given: accept every client (documented)
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return "BadCertificateInvalid"
        now = dt.datetime.now(dt.timezone.utc)
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            return "BadCertificateTimeInvalid"
        for trusted in self._load():
            if trusted.public_bytes(_der()) == der:
                return None
            if trusted.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(trusted)
                    return None
                except Exception:
                    continue
        return "BadCertificateUntrusted"


def _der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def install_opn_trust_check(trust: TrustList) -> None:
    """Reject untrusted client certificates at OpenSecureChannel with an Error message.

    asyncua itself checks client certificates only in CreateSession (Server.set_certificate_validator), so a client
    that only opens a channel and calls GetEndpoints would never be rejected. This wraps UaProcessor.open_secure_channel
    so the channel open fails the way the specification describes (Error message, connection closed).
    """
    from asyncua import ua
    from asyncua.server import uaprocessor
    from asyncua.ua.ua_binary import uatcp_to_binary

    original = uaprocessor.UaProcessor.open_secure_channel

    def open_secure_channel(self, algohdr, seqhdr, body):  # type: ignore[no-untyped-def]
        if not self._connection.is_open() and algohdr.SenderCertificate:
            der = _first_cert(algohdr.SenderCertificate)
            status = trust.status_of(der)
            if status is not None:
                log.warning("rejecting client certificate at OpenSecureChannel: %s", status)
                code = getattr(ua.StatusCodes, status)
                err = ua.ErrorMessage(ua.StatusCode(code), status)
                self._transport.write(uatcp_to_binary(ua.MessageType.Error, err))
                self._transport.close()
                return None
        return original(self, algohdr, seqhdr, body)

    uaprocessor.UaProcessor.open_secure_channel = open_secure_channel


def _first_cert(der: bytes) -> bytes:
    """The first certificate of a DER chain (a SEQUENCE with a definite length)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    first = der[1]
    if first < 0x80:
        return der[: 2 + first]
    n = first & 0x7F
    length = int.from_bytes(der[2 : 2 + n], "big")
    return der[: 2 + n + length]


class UserPolicy:
    """Which user identity tokens the server accepts (--users FILE, --user, --trust-user-cert, --no-anonymous).

    Without any of those options every token is accepted (open mode). Accepted users get asyncua's role User (may read,
    write writable variables, browse, call, subscribe; never Admin, so AccessLevel is enforced).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.restricted = bool(args.users or args.user or args.trust_user_cert or args.no_anonymous)
        self.anonymous = not args.no_anonymous
        self.passwords: dict[str, str] = {}
        self.certs: dict[bytes, str] = {}  # DER -> subject
        if args.users:
            spec = json.loads(Path(args.users).read_text())
            if not spec.get("anonymous", True):
                self.anonymous = False
            self.passwords.update(spec.get("users", {}))
            for path in spec.get("certificates", []):
                self._add_cert(path)
        for entry in args.user or []:
            name, sep, password = entry.partition(":")
            if not sep or not name:
                raise UsageError(f"--user NAME:PASSWORD, got {entry!r}")
            self.passwords[name] = password
        for path in args.trust_user_cert or []:
            self._add_cert(path)

    def _add_cert(self, path: str) -> None:
        from cryptography import x509

        if not Path(path).is_file():
            raise UsageError(f"user certificate {path}: no such file")
        der = load_cert_der(path)
        self.certs[der] = x509.load_der_x509_certificate(der).subject.rfc4514_string()

    def describe(self) -> dict[str, Any]:
        return {
            "restricted": self.restricted,
            "anonymous": self.anonymous,
            "usernames": sorted(self.passwords),
            "user_certificates": len(self.certs),
        }

    def user_manager(self):
        from asyncua.crypto.permission_rules import User, UserRole

        policy = self

        class PeerUserManager:
            def get_user(self, iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
                kind = _token_kind()
                if kind == "username":
                    if not policy.restricted or policy.passwords.get(username) == password:
                        return User(role=UserRole.User, name=username)
                    log.info("user %r rejected (unknown name or wrong password)", username)
                    return None  # asyncua answers BadUserAccessDenied
                if kind == "x509":
                    # asyncua verified the token signature against this certificate before asking.
                    der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(_der())
                    if not policy.restricted or der in policy.certs:
                        return User(role=UserRole.User, name=policy.certs.get(der, "x509"))
                    log.info("user certificate rejected (not trusted)")
                    return None  # asyncua answers BadUserAccessDenied
                if policy.anonymous:  # an anonymous token comes with the channel's application certificate, if any
                    return User(role=UserRole.User, name="anonymous")
                return None

        return PeerUserManager()


# The identity token of the ActivateSession being handled. asyncua hands the user manager the channel's application
# certificate for an anonymous token and the user certificate for an X.509 token, in the same argument, so the manager
# cannot tell them apart by itself; InternalSession.activate_session is synchronous, so a module variable is enough.
_current_token: Any = None


def _token_kind() -> str:
    from asyncua import ua

    if isinstance(_current_token, ua.UserNameIdentityToken):
        return "username"
    if isinstance(_current_token, ua.X509IdentityToken):
        return "x509"
    return "anonymous"


# Whether the secure channel of the request being handled has security policy None (set per asyncio task).
_channel_insecure: contextvars.ContextVar[bool] = contextvars.ContextVar("channel_insecure", default=False)


def install_channel_tracking() -> None:
    from asyncua.server import uaprocessor

    original = uaprocessor.UaProcessor.process_message

    async def process_message(self, seqhdr, body):  # type: ignore[no-untyped-def]
        policy = getattr(self._connection, "security_policy", None)
        token = _channel_insecure.set(policy is None or policy_short(getattr(policy, "URI", "")) == "None")
        try:
            return await original(self, seqhdr, body)
        finally:
            _channel_insecure.reset(token)

    uaprocessor.UaProcessor.process_message = process_message


def install_token_tracking() -> None:
    from asyncua.server import internal_session

    original = internal_session.InternalSession.activate_session

    def activate_session(self, params, peer_certificate):  # type: ignore[no-untyped-def]
        global _current_token
        _current_token = params.UserIdentityToken
        try:
            return original(self, params, peer_certificate)
        finally:
            _current_token = None

    internal_session.InternalSession.activate_session = activate_session


async def cmd_server(args: argparse.Namespace) -> int:
    from asyncua import Server, ua

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    if not args.ignore_stdin:
        threading.Thread(target=_wait_stdin_eof, args=(loop, stop), daemon=True).start()
    parent = os.getppid()

    policies = args.policy or ["Basic256Sha256"]
    modes = args.mode or ["SignAndEncrypt"]
    endpoint_types = []
    for p in policies:
        if p == "None":
            endpoint_types.append(_policy_type("None", "None"))  # whatever --mode says
            continue
        for m in modes:
            if m != "None":  # policies x modes; mode None only goes with policy None
                endpoint_types.append(_policy_type(p, m))
    if not endpoint_types:
        raise UsageError("no valid --policy/--mode pair")
    if any(p != "None" for p in policies):
        resolve_own_cert(args, "server")
        if not (args.cert and args.key):
            raise UsageError("--cert and --key (or --generate-cert DIR) are required with a security policy")
    if args.blob_size < 0:
        raise UsageError("--blob-size must be >= 0")

    trust = TrustList(Path(args.trust) if args.trust else None)
    if args.trust and not Path(args.trust).is_dir():
        raise UsageError(f"--trust {args.trust}: not a directory")
    install_opn_trust_check(trust)
    users = UserPolicy(args)
    install_token_tracking()
    install_channel_tracking()

    server = Server(user_manager=users.user_manager())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}")
    server.set_server_name("certvault interop asyncua server")
    server.set_security_policy(endpoint_types)
    tokens = [ua.UserNameIdentityToken, ua.X509IdentityToken]
    if users.anonymous:
        tokens.insert(0, ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    server.iserver.max_pending_activation_seconds = args.activation_timeout
    if args.cert:
        await server.load_certificate(args.cert)
        await server.load_private_key(args.key)
        await server.set_application_uri(args.app_uri or cert_app_uri(args.cert) or "urn:certvault:interop:asyncua:server")

    async def validate(cert: Any, app_description: Any) -> None:
        from asyncua.common.utils import ServiceError

        if _channel_insecure.get():
            # CreateSession's clientCertificate is only meaningful with a security policy (Part 4, 5.6.2); the asyncua
            # client sends its X.509 *user* certificate there over a None channel. Ignore it, as the spec says.
            return
        status = trust.status_of(cert.public_bytes(_der()))
        if status is not None:
            raise ServiceError(getattr(ua.StatusCodes, status))

    server.set_certificate_validator(validate)

    idx = await server.register_namespace(NAMESPACE_URI)
    assert idx == 2, f"namespace index {idx}"
    folder = await server.nodes.objects.add_folder(ua.NodeId("Demo", idx), ua.QualifiedName("Demo", idx))
    double = await folder.add_variable(
        ua.NodeId("Demo.Double", idx), ua.QualifiedName("Double", idx), 0.0, ua.VariantType.Double
    )
    int32 = await folder.add_variable(
        ua.NodeId("Demo.Int32", idx), ua.QualifiedName("Int32", idx), 0, ua.VariantType.Int32
    )
    await int32.set_writable()

    async def add(parent: Any, a: Any, b: Any) -> list[Any]:
        # asyncua hands method handlers the input arguments as Variants.
        a, b = (x.Value if isinstance(x, ua.Variant) else x for x in (a, b))
        return [ua.Variant(float(a) + float(b), ua.VariantType.Double)]

    arg_a = ua.Argument(Name="a", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    arg_b = ua.Argument(Name="b", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    arg_sum = ua.Argument(Name="sum", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    await folder.add_method(ua.NodeId("Demo.Add", idx), ua.QualifiedName("Add", idx), add, [arg_a, arg_b], [arg_sum])

    counter, blob_info = await add_test_namespace(server, args.blob_size)

    if stop.is_set():  # stopped while loading the address space
        return EXIT_OK
    await server.start()
    try:
        port = server.bserver.port if server.bserver else args.port
        url = f"opc.tcp://127.0.0.1:{port}"
        # The endpoints were built before the OS picked the port: advertise the real one.
        for ep in server.iserver.endpoints:
            ep.EndpointUrl = url
            ep.Server.DiscoveryUrls = [url]
        emit(
            {
                "ready": True,
                "url": url,
                "application_uri": server.get_application_uri(),
                "cert": args.cert,
                "endpoints": [f"{policy_short(ep.SecurityPolicyUri)}/{mode_name(ep.SecurityMode)}" for ep in server.iserver.endpoints],
                "user_token_policies": {
                    f"{policy_short(ep.SecurityPolicyUri)}/{mode_name(ep.SecurityMode)}": [
                        {
                            "policy_id": t.PolicyId,
                            "type": t.TokenType.name,
                            "security_policy": policy_short(t.SecurityPolicyUri or ""),
                        }
                        for t in ep.UserIdentityTokens
                    ]
                    for ep in server.iserver.endpoints
                },
                "nodes": {**DEMO_NODES, **TEST_NODES},
                "namespace_uri": NAMESPACE_URI,
                "test_namespace_uri": TEST_NAMESPACE_URI,
                "test_namespace_index": 3,
                "blob": blob_info,
                "counter_period_ms": int(COUNTER_PERIOD_S * 1000),
                "users": users.describe(),
                "pid": os.getpid(),
            }
        )
        t0 = time.monotonic()
        deadline = t0 + args.max_seconds
        ticks = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                log.warning("--max-seconds %s reached, stopping", args.max_seconds)
                break
            if os.getppid() != parent:
                log.warning("parent process %s is gone, stopping", parent)
                break
            ticks += 1
            await counter.write_value(ua.Variant(ticks, ua.VariantType.Int64))
            await double.write_value(ua.Variant(math.sin(now - t0) * 100.0, ua.VariantType.Double))
            try:
                # next tick on the COUNTER_PERIOD_S grid, so the counter does not drift with the write time
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, t0 + ticks * COUNTER_PERIOD_S - time.monotonic()))
            except asyncio.TimeoutError:
                pass
    finally:
        try:
            await asyncio.wait_for(server.stop(), timeout=5)
        except Exception:
            log.warning("server stop failed", exc_info=True)
    return EXIT_OK


async def add_test_namespace(server: Any, blob_size: int) -> tuple[Any, dict[str, Any]]:
    """Namespace 3 (TEST_NAMESPACE_URI): object Machine with Setpoint, Counter, Blob and the method Add."""
    from asyncua import ua

    idx = await server.register_namespace(TEST_NAMESPACE_URI)
    assert idx == 3, f"test namespace index {idx}"
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine", idx), ua.QualifiedName("Machine", idx))
    setpoint = await machine.add_variable(
        ua.NodeId("Setpoint", idx), ua.QualifiedName("Setpoint", idx), 0.0, ua.VariantType.Double
    )
    await setpoint.set_writable()
    counter = await machine.add_variable(
        ua.NodeId("Counter", idx), ua.QualifiedName("Counter", idx), 0, ua.VariantType.Int64
    )
    blob_value = pattern_bytes(blob_size)
    blob = await machine.add_variable(
        ua.NodeId("Blob", idx), ua.QualifiedName("Blob", idx), blob_value, ua.VariantType.ByteString
    )
    await blob.set_writable()

    def double_args(*args: Any) -> Any:
        """Add's argument check: ua.CallMethodResult on error (asyncua itself does not check), else the floats."""
        if len(args) != 2:
            code = ua.StatusCodes.BadArgumentsMissing if len(args) < 2 else ua.StatusCodes.BadTooManyArguments
            return ua.CallMethodResult(StatusCode=ua.StatusCode(code))
        results = [
            ua.StatusCode()
            if isinstance(a, ua.Variant) and a.VariantType == ua.VariantType.Double
            else ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
            for a in args
        ]
        if any(not r.is_good() for r in results):
            return ua.CallMethodResult(
                StatusCode=ua.StatusCode(ua.StatusCodes.BadInvalidArgument), InputArgumentResults=results
            )
        return [a.Value for a in args]

    async def machine_add(parent: Any, *args: Any) -> Any:
        checked = double_args(*args)
        if isinstance(checked, ua.CallMethodResult):
            return checked
        a, b = checked
        return [ua.Variant(a + b, ua.VariantType.Double)]

    arg_a = ua.Argument(Name="a", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    arg_b = ua.Argument(Name="b", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    arg_sum = ua.Argument(Name="sum", DataType=ua.NodeId(ua.ObjectIds.Double), ValueRank=-1)
    await machine.add_method(
        ua.NodeId("Machine.Add", idx), ua.QualifiedName("Add", idx), machine_add, [arg_a, arg_b], [arg_sum]
    )
    return counter, {"size": blob_size, "sha256": hashlib.sha256(blob_value).hexdigest()}


def _wait_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read on the descriptor, not sys.stdin.buffer: a daemon thread blocked inside the buffered reader holds its
    # lock, and the interpreter aborts ("could not acquire lock ... at interpreter shutdown") when the server stops
    # for another reason (SIGTERM) while stdin is still open.
    try:
        while os.read(0, 4096):
            pass
    except Exception:
        pass
    try:
        loop.call_soon_threadsafe(stop.set)
    except RuntimeError:  # the loop is closed already
        pass


def _policy_type(policy: str, mode: str):
    from asyncua import ua

    if policy == "None":
        return ua.SecurityPolicyType.NoSecurity
    prefix = {
        "Basic256Sha256": "Basic256Sha256",
        "Aes128_Sha256_RsaOaep": "Aes128Sha256RsaOaep",
        "Aes256_Sha256_RsaPss": "Aes256Sha256RsaPss",
    }[policy]
    return getattr(ua.SecurityPolicyType, f"{prefix}_{mode}")


# --------------------------------------------------------------------------------------------------------------------
# Command line


class OpAction(argparse.Action):
    """Collects --read/--write/--browse/--call/--subscribe as (op, value) in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        ops = getattr(namespace, "ops", None) or []
        ops.append((option_string.lstrip("-"), values))
        namespace.ops = ops


class JsonArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        emit({"ok": False, "error": f"usage: {message}", "status": "BadInvalidArgument"})
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = JsonArgumentParser(prog="ua_peer.py", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)

    g = sub.add_parser("gen-cert", help="generate a self-signed application certificate and key")
    g.add_argument("--out", required=True, help="directory for NAME.der and NAME.key.pem")
    g.add_argument("--name", default="asyncua", help="file name stem and CN")
    g.add_argument("--app-uri", required=True, help="ApplicationUri (subjectAltName URI)")
    g.add_argument("--key-bits", type=int, default=2048)
    g.add_argument("--days", type=int, default=365)

    u = sub.add_parser("gen-user-cert", help="generate a self-signed X.509 user identity certificate and key")
    u.add_argument("--out", required=True, help="directory for NAME.der and NAME.key.pem")
    u.add_argument("--name", default="user", help="file name stem and CN")
    u.add_argument("--key-bits", type=int, default=2048)
    u.add_argument("--days", type=int, default=365)

    def own_cert(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--cert", help="own certificate (DER or PEM)")
        sp.add_argument("--key", help="own private key, unencrypted: PEM (PKCS#8 or PKCS#1), or DER if the name ends in .der")
        sp.add_argument("--app-uri", help="own ApplicationUri (default: the URI in --cert's subjectAltName)")
        sp.add_argument("--generate-cert", metavar="DIR", help="generate --cert/--key into DIR when not given")
        sp.add_argument("--key-bits", type=int, default=2048, help="RSA size for --generate-cert")

    for name in ("client-endpoints", "client-session"):
        c = sub.add_parser(name)
        c.add_argument("--url", required=True)
        c.add_argument("--policy", required=True, choices=POLICIES)
        c.add_argument("--mode", required=True, choices=MODES)
        own_cert(c)
        c.add_argument("--server-cert", help="the server's certificate (DER or PEM); required unless --policy None")
        c.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
        c.add_argument("--deadline", type=float, default=60.0, help="whole command, seconds")
        c.add_argument(
            "--expect-failure",
            metavar="STATUS[,STATUS...]",
            action="append",
            help="exit 0 only if the command fails and every failure has one of these status names (repeatable)",
        )
        if name == "client-session":
            c.add_argument("--user", default="anonymous", help="anonymous | NAME:PASSWORD | x509:CERT:KEY")
            c.add_argument("--user-cert", metavar="FILE", help="X.509 user identity certificate (DER or PEM)")
            c.add_argument("--user-key", metavar="FILE", help="its private key (unencrypted PEM)")
            for op, metavar in (
                ("read", "NODEID"),
                ("write", "NODEID=VALUE:TYPE"),
                ("browse", "NODEID"),
                ("call", "OBJECT:METHOD[:VALUE:TYPE,...]"),
                ("subscribe", "NODEID"),
            ):
                c.add_argument(f"--{op}", action=OpAction, dest="ops", metavar=metavar, help="repeatable; run in order")
            c.add_argument("--changes", type=int, default=3, help="data changes to wait for per --subscribe")
            c.add_argument("--publish-interval", type=float, default=100.0, help="ms")
            c.add_argument("--subscribe-timeout", type=float, default=15.0, help="seconds per --subscribe")

    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0, help="0: the OS picks a free port")
    s.add_argument("--policy", action="append", choices=POLICIES, help="repeatable (default Basic256Sha256)")
    s.add_argument("--mode", action="append", choices=MODES, help="repeatable (default SignAndEncrypt)")
    own_cert(s)
    s.add_argument("--trust", metavar="DIR", help="trusted client certificates or CAs (DER/PEM); none: trust all")
    s.add_argument("--users", metavar="FILE", help="JSON users file (see README.md)")
    s.add_argument("--user", action="append", metavar="NAME:PASSWORD", help="accepted user name (repeatable)")
    s.add_argument(
        "--trust-user-cert", action="append", metavar="FILE", help="accepted X.509 user certificate (repeatable)"
    )
    s.add_argument("--no-anonymous", action="store_true", help="do not offer or accept the anonymous token")
    s.add_argument("--blob-size", type=int, default=1048576, help="bytes in ns=3;s=Blob (default 1 MiB)")
    s.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long whatever happens")
    s.add_argument("--activation-timeout", type=float, default=30.0, help="close channels without a session after")
    s.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # asyncua logs expected failures (rejected certificates, closed channels) loudly.
        logging.getLogger("asyncua").setLevel(logging.CRITICAL if args.verbose == 0 else logging.WARNING)

    try:
        if args.command == "gen-cert":
            made = generate_cert(Path(args.out), args.name, args.app_uri, bits=args.key_bits, days=args.days)
            emit({"ok": True, **made})
            return EXIT_OK
        if args.command == "gen-user-cert":
            made = generate_user_cert(Path(args.out), args.name, bits=args.key_bits, days=args.days)
            emit({"ok": True, **made})
            return EXIT_OK
        if args.command == "server":
            return asyncio.run(cmd_server(args))
        expected = expected_failures(args)
        handler = cmd_client_endpoints if args.command == "client-endpoints" else cmd_client_session

        async def bounded() -> dict[str, Any]:
            return await asyncio.wait_for(handler(args), timeout=args.deadline)

        try:
            result = asyncio.run(bounded())
        except UsageError:
            raise
        except Exception as exc:
            log.info("failed", exc_info=True)
            error, status = classify_error(exc)
            result = {"ok": False, "error": error, "status": status}
        code = EXIT_OK if result.get("ok") else EXIT_FAILED
        if expected is not None:
            code = judge_expectation(result, expected)
        emit(result)
        return code
    except UsageError as exc:
        emit({"ok": False, "error": f"usage: {exc}", "status": "BadInvalidArgument"})
        return EXIT_USAGE
    except Exception as exc:
        log.info("failed", exc_info=True)
        error, status = classify_error(exc)
        if args.command == "server":
            emit({"ready": False, "error": error, "status": status})
        else:
            emit({"ok": False, "error": error, "status": status})
        return EXIT_FAILED


def expected_failures(args: argparse.Namespace) -> list[str] | None:
    """The --expect-failure status names (checked against asyncua's table), or None."""
    from asyncua import ua

    if not args.expect_failure:
        return None
    names = [n.strip() for spec in args.expect_failure for n in spec.split(",") if n.strip()]
    for n in names:
        if not n.startswith("Bad") or not isinstance(getattr(ua.StatusCodes, n, None), int):
            raise UsageError(f"--expect-failure: not a Bad status code name: {n!r}")
    if not names:
        raise UsageError("--expect-failure: no status name")
    return names


def judge_expectation(result: dict[str, Any], expected: list[str]) -> int:
    """Adds "expected_failure" and "expectation_met" to result; EXIT_OK when met, else EXIT_FAILED.

    The failures are the connect/activation failure (no "results"), or else every failed operation. The expectation
    is met when there is at least one failure and every failure's status is in `expected`.
    """
    if "results" in result:
        failures = [r.get("status") for r in result["results"] if not r.get("ok")]
    else:
        failures = [] if result.get("ok") else [result.get("status")]
    met = bool(failures) and all(f in expected for f in failures)
    result["expected_failure"] = expected
    result["expectation_met"] = met
    return EXIT_OK if met else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
