#!/usr/bin/env python3
"""Self-test of ua_peer.py without the Rust stack: asyncua client against asyncua server through the CLI contract.

Run with the interop venv's Python (selftest.sh does that). Everything lives in a temporary directory; every process is
bounded in time and stopped at the end. Exit code 0 when every check passed.

What it covers:
- the demo namespace (ns=2), client trust at OpenSecureChannel, the --users file (as before);
- the interop matrix: every endpoint (None, and Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss x Sign,
  SignAndEncrypt) x every user token (anonymous, user name, X.509 user certificate), each session reading, writing,
  browsing, calling Machine.Add, reading the 1 MiB Blob and seeing 3 Counter data changes in a subscription;
- refusals: wrong password, untrusted user certificate (both BadUserAccessDenied, via --expect-failure) on three
  endpoints (--full: all seven), and anonymous on a --no-anonymous server (BadIdentityTokenRejected);
- operation failures: write to the read-only Counter, Add with a wrong type and a missing argument;
- server life cycle: stop on SIGTERM (exit 0) and when its parent process dies.

Options: -j N runs N client processes at a time (default 4); --full checks the refusals on every endpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = [sys.executable, str(HERE / "ua_peer.py")]
CHECKS: list[tuple[str, bool, str]] = []
_lock = threading.Lock()

POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
CHANNELS = [("None", "None")] + [(p, m) for p in POLICIES for m in ("Sign", "SignAndEncrypt")]
# The refusal cases by default (--full: every channel): one per token-policy shape asyncua advertises (None channel:
# password encrypted with the first SignAndEncrypt policy; Sign: with the channel's policy; SignAndEncrypt: plain).
REFUSAL_CHANNELS = [("None", "None"), ("Basic256Sha256", "Sign"), ("Aes256_Sha256_RsaPss", "SignAndEncrypt")]
BLOB_SIZE = 1048576


def run(*args: str, timeout: float = 60) -> tuple[int, dict]:
    """Run one ua_peer.py client command; return (exit code, the JSON object it printed)."""
    proc = subprocess.run([*PEER, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise AssertionError(f"expected exactly one JSON line, got {proc.stdout!r}; stderr: {proc.stderr[-2000:]}")
    return proc.returncode, json.loads(lines[0])


def check(name: str, ok: bool, detail: object = "") -> None:
    with _lock:
        CHECKS.append((name, ok, str(detail)[:600]))
        print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {str(detail)[:600]}"), flush=True)


class PeerServer:
    """ua_peer.py server: start() spawns it, ready() waits for the ready line, stop() closes stdin (the contract)."""

    def __init__(self, *args: str, ready_timeout: float = 40) -> None:
        self.args = args
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PeerServer":
        self.proc = subprocess.Popen(
            [*PEER, "server", "--max-seconds", "120", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def ready(self) -> dict:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
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
        self.stop()
        raise AssertionError(f"server did not become ready: {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.stdin.close()
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def gen(d: Path) -> dict[str, dict]:
    """Certificates, made in parallel: application certificates and user certificates."""
    jobs = {
        "server": ("gen-cert", "--out", str(d), "--name", "server", "--app-uri", "urn:selftest:server"),
        "client": ("gen-cert", "--out", str(d), "--name", "client", "--app-uri", "urn:selftest:client"),
        "stranger": ("gen-cert", "--out", str(d / "other"), "--name", "stranger", "--app-uri", "urn:selftest:x"),
        "user": ("gen-cert", "--out", str(d), "--name", "user", "--app-uri", "urn:selftest:user"),
        "operator": ("gen-user-cert", "--out", str(d), "--name", "operator"),
        "intruder": ("gen-user-cert", "--out", str(d / "other"), "--name", "intruder"),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {k: pool.submit(run, *v) for k, v in jobs.items()}
        out = {}
        for k, f in futures.items():
            code, obj = f.result()
            check(f"{jobs[k][0]} {k}", code == 0 and obj["ok"], obj)
            out[k] = obj
    return out


def demo_checks(url: str, nodes: dict, certs: dict) -> None:
    """The demo namespace, the users file, client trust (the checks of the first version of this self-test)."""
    srv, cli, other, user = certs["server"], certs["client"], certs["stranger"], certs["user"]
    sec = ["--url", url, "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
           "--cert", cli["cert"], "--key", cli["key"], "--server-cert", srv["cert"]]  # fmt: skip

    code, out = run("client-endpoints", *sec)
    eps = out.get("endpoints", [])
    check(
        "client-endpoints lists the 7 endpoints with the real URL",
        code == 0 and out["ok"] and len(eps) == 7 and all(e["url"] == url for e in eps)
        and {(e["policy"], e["mode"]) for e in eps} == set(CHANNELS),
        out,
    )  # fmt: skip

    code, out = run(
        "client-session", *sec,
        "--write", f"{nodes['int32']}=42:Int32",
        "--read", nodes["int32"],
        "--browse", nodes["folder"],
        "--call", f"{nodes['folder']}:{nodes['add']}:1.5:Double,2:Double",
        "--subscribe", nodes["double"], "--changes", "3",
    )  # fmt: skip
    r = out.get("results", [])
    check("demo session ok", code == 0 and out["ok"] and len(r) == 5, out)
    if len(r) == 5:
        check("demo write+read Int32", r[1]["ok"] and r[1]["value"] == 42 and r[1]["type"] == "Int32", r[1])
        names = sorted(ref["browse_name"] for ref in r[2].get("references", []))
        check("demo browse", names == ["2:Add", "2:Double", "2:Int32"], r[2])
        check("demo call Add", r[3]["ok"] and r[3]["outputs"] == [3.5], r[3])
        ch = r[4].get("changes", [])
        check("demo subscribe 3 changes", r[4]["ok"] and len(ch) == 3 and len(set(ch)) == 3, r[4])

    code, out = run("client-session", *sec, "--user", "alice:secret", "--read", nodes["int32"])
    check("users-file user alice accepted", code == 0 and out["ok"], out)
    code, out = run("client-session", *sec, "--user", f"x509:{user['cert']}:{user['key']}", "--read", nodes["int32"])
    check("users-file X.509 user accepted (x509:CERT:KEY form)", code == 0 and out["ok"], out)
    code, out = run("client-session", *sec, "--user", "alice:wrong", "--read", nodes["int32"])
    check("wrong password: exit 1, BadUserAccessDenied", code == 1 and out.get("status") == "BadUserAccessDenied", out)

    stranger = ["--url", url, "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                "--cert", other["cert"], "--key", other["key"], "--server-cert", srv["cert"]]  # fmt: skip
    code, out = run("client-endpoints", *stranger, "--timeout", "5", "--expect-failure", "BadCertificateUntrusted")
    check("untrusted client rejected at OPN", code == 0 and out.get("status") == "BadCertificateUntrusted", out)

    code, out = run("client-endpoints", "--url", url, "--policy", "None", "--mode", "None")
    check("GetEndpoints over a None channel answers", code == 0 and len(out.get("endpoints", [])) == 7, out)


def channel_args(url: str, policy: str, mode: str, certs: dict) -> list[str]:
    a = ["--url", url, "--policy", policy, "--mode", mode]
    if policy != "None":
        a += ["--cert", certs["client"]["cert"], "--key", certs["client"]["key"],
              "--server-cert", certs["server"]["cert"]]  # fmt: skip
    return a


def matrix_case(url: str, ready: dict, certs: dict, policy: str, mode: str, token: str) -> None:
    n = ready["nodes"]
    user = {
        "anonymous": [],
        "username": ["--user", "operator:secret"],
        "x509": ["--user-cert", certs["operator"]["cert"], "--user-key", certs["operator"]["key"]],
    }[token]
    name = f"matrix {policy}/{mode} {token}"
    code, out = run(
        "client-session", *channel_args(url, policy, mode, certs), *user,
        "--read", n["setpoint"],
        "--write", f"{n['setpoint']}=12.5:Double",
        "--read", n["counter"],
        "--read", n["blob"],
        "--browse", n["machine"],
        "--call", f"{n['machine']}:{n['machine_add']}:1.25:Double,2:Double",
        "--subscribe", n["counter"], "--changes", "3",
    )  # fmt: skip
    r = out.get("results", [])
    problems = []
    if code != 0 or not out.get("ok") or len(r) != 7:
        problems.append("session")
    else:
        if out["session"] != {"policy": policy, "mode": mode, "user": token}:
            problems.append("session fields")
        if r[0]["type"] != "Double" or r[1]["status"] != "Good":
            problems.append("read/write Setpoint")
        if r[2]["type"] != "Int64" or not isinstance(r[2]["value"], int):
            problems.append("read Counter")
        blob = r[3].get("value", {})
        want = [BLOB_SIZE, ready["blob"]["sha256"]]
        if r[3]["type"] != "ByteString" or [blob.get("len"), blob.get("sha256")] != want:
            problems.append("read Blob")
        names = sorted(ref["browse_name"] for ref in r[4].get("references", []))
        if names != ["3:Add", "3:Blob", "3:Counter", "3:Setpoint"]:
            problems.append("browse Machine")
        if r[5].get("outputs") != [3.25]:
            problems.append("call Add")
        ch = r[6].get("changes", [])
        if r[6].get("count") != 3 or len(ch) != 3 or not all(b > a for a, b in zip(ch, ch[1:])):
            problems.append("subscribe Counter")
    check(name, not problems, f"{problems} {out}")


def refusal_case(url: str, certs: dict, policy: str, mode: str, what: str, n: dict) -> None:
    user, expected = {
        "wrong password": (["--user", "operator:wrong"], "BadUserAccessDenied"),
        "untrusted user certificate": (
            ["--user-cert", certs["intruder"]["cert"], "--user-key", certs["intruder"]["key"]],
            "BadUserAccessDenied",
        ),
    }[what]
    code, out = run(
        "client-session", *channel_args(url, policy, mode, certs), *user, "--read", n["setpoint"],
        "--expect-failure", expected,
    )  # fmt: skip
    check(
        f"refused {policy}/{mode} {what}: {expected}",
        code == 0 and out.get("status") == expected and out.get("expectation_met") is True and "results" not in out,
        out,
    )


def operation_failures(url: str, n: dict, certs: dict) -> None:
    sec = channel_args(url, "Aes128_Sha256_RsaOaep", "SignAndEncrypt", certs)
    code, out = run(
        "client-session", *sec, "--user", "operator:secret",
        "--write", f"{n['setpoint']}=-7.25:Double", "--read", n["setpoint"],
        "--write", f"{n['counter']}=5:Int64",
        "--call", f"{n['machine']}:{n['machine_add']}:1:Int32,2:Double",
        "--call", f"{n['machine']}:{n['machine_add']}:1:Double",
        "--read", "ns=3;s=NoSuchNode",
        "--write", f"{n['blob']}=00ff10:ByteString", "--read", n["blob"],
        "--write", f"{n['blob']}=*{BLOB_SIZE}:ByteString",
    )  # fmt: skip
    r = out.get("results", [])
    check("operation failures: top level ok=false, exit 1, first failure's status", code == 1 and out.get("ok") is False
          and out.get("status") == "BadUserAccessDenied" and len(r) == 9, out)  # fmt: skip
    if len(r) == 9:
        check("write then read back Setpoint", r[0]["ok"] and r[1]["value"] == -7.25, r[:2])
        check("write read-only Counter: BadUserAccessDenied (asyncua)", r[2]["status"] == "BadUserAccessDenied", r[2])
        check("Add(Int32, Double): BadInvalidArgument", r[3]["status"] == "BadInvalidArgument", r[3])
        check("Add(Double): BadArgumentsMissing", r[4]["status"] == "BadArgumentsMissing", r[4])
        check("read unknown node: BadNodeIdUnknown", r[5]["status"] == "BadNodeIdUnknown", r[5])
        check("write/read a small Blob", r[6]["ok"] and r[7]["value"].get("base64") == "AP8Q", r[6:8])
        check("write the 1 MiB Blob back", r[8]["ok"], r[8])

    # --expect-failure with several failures of the expected codes, and an expectation that is not met
    code, out = run("client-session", *sec, "--write", f"{n['counter']}=5:Int64", "--write", f"{n['counter']}=6:Int64",
                    "--expect-failure", "BadUserAccessDenied,BadNotWritable")  # fmt: skip
    check("--expect-failure met by every failed operation: exit 0", code == 0 and out["expectation_met"] is True, out)
    code, out = run("client-session", *sec, "--read", n["setpoint"], "--expect-failure", "BadUserAccessDenied")
    check("--expect-failure on a success: exit 1", code == 1 and out["ok"] and out["expectation_met"] is False, out)
    code, out = run("client-session", *sec, "--user", "operator:wrong", "--expect-failure", "BadIdentityTokenRejected")
    check("--expect-failure with another code: exit 1", code == 1 and out["expectation_met"] is False, out)
    code, out = run("client-session", *sec, "--expect-failure", "Good")
    check("--expect-failure Good: usage error, exit 2", code == 2 and out["status"] == "BadInvalidArgument", out)


def server_b_checks(b: PeerServer, certs: dict) -> None:
    """A --no-anonymous server with an empty Blob, stopped with SIGTERM while its stdin is still open."""
    ready_b = b.ready()
    for p, m in (("None", "None"), ("Basic256Sha256", "Sign")):
        sec = channel_args(ready_b["url"], p, m, certs)
        code, out = run("client-session", *sec, "--read", ready_b["nodes"]["blob"],
                        "--expect-failure", "BadIdentityTokenRejected")  # fmt: skip
        check(f"--no-anonymous {p}/{m}: anonymous refused with BadIdentityTokenRejected", code == 0, out)
    code, out = run("client-session", *channel_args(ready_b["url"], "None", "None", certs),
                    "--user", "operator:secret", "--read", ready_b["nodes"]["blob"])  # fmt: skip
    value = (out.get("results") or [{}])[0].get("value", {})
    check("--blob-size 0: empty Blob; user name over a None channel", code == 0 and value.get("len") == 0
          and value.get("base64") == "", out)  # fmt: skip
    tokens = {t["type"] for t in ready_b["user_token_policies"]["None/None"]}
    check("--no-anonymous: no Anonymous token policy advertised", tokens == {"UserName", "Certificate"}, ready_b)

    b.proc.send_signal(signal.SIGTERM)
    try:
        rc = b.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = None
    check("server stops on SIGTERM with exit code 0 (stdin still open)", rc == 0, f"rc={rc}")


def parent_death_check(d: Path) -> None:
    """The server stops when its parent dies: an intermediate shell starts it and is killed."""
    ready_file = d / "orphan.json"
    sh = subprocess.Popen(
        ["sh", "-c", f'"$@" > {ready_file} 2>/dev/null & exec sleep 100', "sh", *PEER, "server", "--policy", "None",
         "--blob-size", "0", "--ignore-stdin", "--max-seconds", "60"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 40
    pid = None
    while time.monotonic() < deadline:
        text = ready_file.read_text() if ready_file.exists() else ""
        if text.strip():
            pid = json.loads(text)["pid"]
            break
        time.sleep(0.1)
    sh.kill()
    sh.wait()
    if pid is None:
        check("server stops when its parent dies", False, "never ready")
        return
    t0 = time.monotonic()
    gone = False
    while time.monotonic() - t0 < 10 and not gone:
        gone = exited(pid)
        time.sleep(0.1)
    if not gone:
        os.kill(pid, signal.SIGKILL)
    check("server stops when its parent dies", gone, f"still running after 10 s (pid {pid})")


def exited(pid: int) -> bool:
    """True once the process is gone or a zombie (init may take a while to reap an orphan)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: fall back to kill(0), which counts zombies as alive
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", type=int, default=4, help="client processes at a time")
    ap.add_argument("--full", action="store_true", help="the refusals on all 7 endpoints, not 3")
    opts = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ua_peer_selftest.") as tmp:
        d = Path(tmp)
        certs = gen(d)
        trust = d / "trust"
        trust.mkdir()
        (trust / "client.der").write_bytes(Path(certs["client"]["cert"]).read_bytes())
        users = d / "users.json"
        users_spec = {"anonymous": True, "users": {"alice": "secret"}, "certificates": [certs["user"]["cert"]]}
        users.write_text(json.dumps(users_spec))
        srv = certs["server"]

        all_endpoints = ["--policy", "None"] + [x for p in POLICIES for x in ("--policy", p)]
        all_endpoints += ["--mode", "Sign", "--mode", "SignAndEncrypt"]
        a = PeerServer(
            *all_endpoints, "--cert", srv["cert"], "--key", srv["key"], "--trust", str(trust), "--users", str(users),
            "--user", "operator:secret", "--trust-user-cert", certs["operator"]["cert"], "--blob-size", str(BLOB_SIZE),
        ).start()  # fmt: skip
        b = PeerServer(
            "--policy", "None", "--policy", "Basic256Sha256", "--mode", "Sign", "--cert", srv["cert"], "--key",
            srv["key"], "--no-anonymous", "--user", "operator:secret", "--blob-size", "0",
        ).start()  # fmt: skip
        orphan = threading.Thread(target=parent_death_check, args=(d,))
        orphan.start()
        try:
            ready = a.ready()
            url = ready["url"]
            check(
                "server A ready line",
                url.startswith("opc.tcp://127.0.0.1:") and not url.endswith(":0")
                and ready["test_namespace_uri"] == "urn:certvault:test:python" and ready["test_namespace_index"] == 3
                and ready["nodes"]["setpoint"] == "ns=3;s=Setpoint"
                and ready["nodes"]["machine_add"] == "ns=3;s=Machine.Add"
                and ready["blob"]["size"] == BLOB_SIZE
                and ready["blob"]["sha256"] == hashlib.sha256((bytes(range(256)) * 4096)).hexdigest()
                and ready["users"] == {"restricted": True, "anonymous": True, "usernames": ["alice", "operator"],
                                       "user_certificates": 2}
                and len(ready["endpoints"]) == 7 and set(ready["user_token_policies"]) == set(ready["endpoints"]),
                ready,
            )  # fmt: skip
            with ThreadPoolExecutor(max_workers=opts.j) as pool:
                jobs = [pool.submit(demo_checks, url, ready["nodes"], certs), pool.submit(server_b_checks, b, certs)]
                jobs += [pool.submit(matrix_case, url, ready, certs, p, m, t)
                        for p, m in CHANNELS for t in ("anonymous", "username", "x509")]  # fmt: skip
                jobs += [pool.submit(refusal_case, url, certs, p, m, w, ready["nodes"])
                         for p, m in (CHANNELS if opts.full else REFUSAL_CHANNELS)
                         for w in ("wrong password", "untrusted user certificate")]  # fmt: skip
                for j in jobs:
                    j.result()
            # after the matrix: it writes Setpoint and Blob, which the matrix reads
            operation_failures(url, ready["nodes"], certs)

        finally:
            rc = a.stop()
            check("server stops when stdin closes, exit code 0", rc == 0, f"rc={rc}")
            b.stop()
            orphan.join()

    failed = [c for c in CHECKS if not c[1]]
    print(f"selftest: {len(CHECKS) - len(failed)}/{len(CHECKS)} passed in {time.monotonic() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
