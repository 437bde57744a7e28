#!/usr/bin/env python3
"""Self-test of ua_peer.py without the Rust stack: asyncua client against asyncua server through the CLI contract.

Run with the interop venv's Python (selftest.sh does that). Everything lives in a temporary directory; every process is
bounded in time and killed at the end. Exit code 0 when every check passed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = [sys.executable, str(HERE / "ua_peer.py")]
CHECKS: list[tuple[str, bool, str]] = []


def run(*args: str, timeout: float = 60) -> tuple[int, dict]:
    """Run one ua_peer.py client command; return (exit code, the JSON object it printed)."""
    proc = subprocess.run([*PEER, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise AssertionError(f"expected exactly one JSON line, got {proc.stdout!r}; stderr: {proc.stderr[-2000:]}")
    return proc.returncode, json.loads(lines[0])


def check(name: str, ok: bool, detail: object = "") -> None:
    CHECKS.append((name, ok, str(detail)[:300]))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)


class PeerServer:
    """ua_peer.py server as a context manager: waits for the ready line, stops by closing stdin."""

    def __init__(self, *args: str, ready_timeout: float = 30) -> None:
        self.args = args
        self.ready_timeout = ready_timeout

    def __enter__(self) -> dict:
        self.proc = subprocess.Popen(
            [*PEER, "server", "--max-seconds", "120", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + self.ready_timeout
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    break
                ready = json.loads(line)
                if not ready.get("ready"):
                    raise AssertionError(f"server not ready: {ready}")
                return ready
        self.__exit__()
        raise AssertionError(f"server did not become ready: {self.proc.stderr.read()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        try:
            self.proc.stdin.close()  # the contract: the server stops when stdin closes
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> int:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ua_peer_selftest.") as tmp:
        d = Path(tmp)
        code, srv = run("gen-cert", "--out", str(d), "--name", "server", "--app-uri", "urn:selftest:server")
        check("gen-cert server", code == 0 and srv["ok"], srv)
        code, cli = run("gen-cert", "--out", str(d), "--name", "client", "--app-uri", "urn:selftest:client")
        check("gen-cert client", code == 0 and cli["ok"], cli)
        code, other = run("gen-cert", "--out", str(d / "other"), "--name", "stranger", "--app-uri", "urn:selftest:x")
        code, user = run("gen-cert", "--out", str(d), "--name", "user", "--app-uri", "urn:selftest:user")
        trust = d / "trust"
        trust.mkdir()
        (trust / "client.der").write_bytes(Path(cli["cert"]).read_bytes())
        users = d / "users.json"
        users.write_text(
            json.dumps({"anonymous": True, "users": {"alice": "secret"}, "certificates": [user["cert"]]})
        )

        with PeerServer(
            "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
            "--cert", srv["cert"], "--key", srv["key"], "--trust", str(trust), "--users", str(users),
        ) as ready:  # fmt: skip
            check("server ready", ready["url"].startswith("opc.tcp://127.0.0.1:") and not ready["url"].endswith(":0"), ready)
            url = ready["url"]
            nodes = ready["nodes"]
            sec = ["--url", url, "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                   "--cert", cli["cert"], "--key", cli["key"], "--server-cert", srv["cert"]]  # fmt: skip

            code, out = run("client-endpoints", *sec)
            eps = out.get("endpoints", [])
            check(
                "client-endpoints Basic256Sha256/SignAndEncrypt",
                code == 0
                and out["ok"]
                and len(eps) == 1
                and eps[0]["policy"] == "Basic256Sha256"
                and eps[0]["mode"] == "SignAndEncrypt"
                and eps[0]["url"] == url,
                out,
            )

            code, out = run(
                "client-session", *sec,
                "--read", nodes["double"],
                "--write", f"{nodes['int32']}=42:Int32",
                "--read", nodes["int32"],
                "--browse", nodes["folder"],
                "--call", f"{nodes['folder']}:{nodes['add']}:1.5:Double,2:Double",
                "--subscribe", nodes["double"], "--changes", "3",
            )  # fmt: skip
            r = out.get("results", [])
            check("client-session ok", code == 0 and out["ok"] and len(r) == 6, out)
            if len(r) == 6:
                check("read Double", r[0]["ok"] and r[0]["type"] == "Double", r[0])
                check("write Int32", r[1]["ok"] and r[1]["status"] == "Good", r[1])
                check("read back Int32", r[2]["ok"] and r[2]["value"] == 42 and r[2]["type"] == "Int32", r[2])
                names = sorted(ref["browse_name"] for ref in r[3].get("references", []))
                check("browse Demo", names == ["2:Add", "2:Double", "2:Int32"], r[3])
                check("call Add", r[4]["ok"] and r[4]["outputs"] == [3.5], r[4])
                ch = r[5].get("changes", [])
                check("subscribe 3 changes", r[5]["ok"] and len(ch) == 3 and len(set(ch)) == 3, r[5])

            code, out = run("client-session", *sec, "--user", "alice:secret", "--read", nodes["int32"])
            check("username alice accepted", code == 0 and out["ok"], out)
            code, out = run("client-session", *sec, "--user", "alice:wrong", "--read", nodes["int32"])
            check("wrong password rejected", code == 1 and out.get("status") == "BadUserAccessDenied", out)
            code, out = run("client-session", *sec, "--user", f"x509:{user['cert']}:{user['key']}", "--read", nodes["int32"])
            check("x509 user accepted", code == 0 and out["ok"], out)

            stranger = ["--url", url, "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                        "--cert", other["cert"], "--key", other["key"], "--server-cert", srv["cert"]]  # fmt: skip
            code, out = run("client-endpoints", *stranger, "--timeout", "5")
            check("untrusted client rejected at OPN", code == 1 and out.get("status") == "BadCertificateUntrusted", out)

            code, out = run("client-endpoints", "--url", url, "--policy", "None", "--mode", "None")
            check("GetEndpoints over a None channel (discovery) answers", code == 0 and len(out["endpoints"]) == 1, out)

    failed = [c for c in CHECKS if not c[1]]
    print(f"selftest: {len(CHECKS) - len(failed)}/{len(CHECKS)} passed in {time.monotonic() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
