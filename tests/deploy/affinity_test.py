"""Session affinity, proved locally: three `sinkserve serve` replicas (bearer token required)
behind Debian's nginx running deploy/nginx/sinkserve.conf (grpc_pass, consistent hash on
x-session-id). Multi-turn conversations must stay on one replica (server_id in every result),
their sessions named by the x-session-id they send, while new ones spread; sinkserve-bench's
3-turn conversations through nginx complete with no NOT_FOUND. The replicas share a session
store (--session-store, --session-persist turn): a replica killed (SIGKILL) mid-test loses
nothing: its conversations continue on the others, restored from the store, with 0 NOT_FOUND
and the very tokens of a reference server that never lost them.
    python affinity_test.py SINKSERVE_BINARY SINKSERVE_BENCH_BINARY WORK_DIR
"""
import json
import re
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc

from deploy_support import SOURCE_DIR, Process, Sinkserve, free_port, require_tools, stubs, wait_for

CONVERSATIONS = 12
TOKEN = secrets.token_hex(16)
AUTHORIZATION = ("authorization", f"Bearer {TOKEN}")


def nginx_config(work: Path, replicas: list[Sinkserve], port: int, tls_port: int) -> Path:
    """The committed config with this test's ports, inside a minimal nginx.conf, plus the same
    location behind TLS on `tls_port` (the way the snippet's comment says to face the internet),
    with the certificate make_certificate wrote."""
    snippet = (SOURCE_DIR / "deploy/nginx/sinkserve.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=30s;\n"
                      for r in replicas)
    snippet, count = re.subn(r"(    server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, snippet)
    assert count == 1, "upstream servers not found in deploy/nginx/sinkserve.conf"
    snippet, count = re.subn(r"listen 127\.0\.0\.1:\d+ http2;", f"listen 127.0.0.1:{port} http2;",
                             snippet)
    assert count == 1, "listen line not found in deploy/nginx/sinkserve.conf"
    temp = work / "nginx-temp"
    temp.mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log {work}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{snippet}
    server {{
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {work}/tls.crt;
        ssl_certificate_key {work}/tls.key;
        location / {{
            grpc_pass grpc://sinkserve;
            grpc_next_upstream error;
            grpc_read_timeout 3600s;
            grpc_send_timeout 3600s;
        }}
    }}
}}
""")
    return config


def make_certificate(openssl: str, work: Path) -> None:
    """A self-signed certificate for localhost (the bench trusts it with --tls-ca)."""
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(work / "tls.key"), "-out", str(work / "tls.crt")],
                   check=True, capture_output=True, timeout=60)


class Conversation:
    def __init__(self, key: str, stub, pb2):
        self.key, self.stub, self.pb2 = key, stub, pb2
        self.metadata = (("x-session-id", key), AUTHORIZATION)
        self.session_id = ""
        self.replica = ""

    def create(self) -> None:
        self.session_id = self.stub.CreateSession(self.pb2.CreateSessionRequest(),
                                                  metadata=self.metadata, timeout=30).session_id
        assert self.session_id == self.key, (self.session_id, self.key)  # named by the header

        self.tokens: list[list[int]] = []  # of every turn
        self.texts: list[str] = []

    def turn(self, text: str) -> str:
        """One Generate on the session; returns the server_id of its result."""
        result = None
        tokens = []
        for response in self.stub.Generate(
                self.pb2.GenerateRequest(session_id=self.session_id, prompt_text=text,
                                         max_new_tokens=8, ignore_eos=True),
                metadata=self.metadata, timeout=60):
            tokens += response.token_ids
            if response.HasField("result"):
                result = response.result
        assert result is not None and result.generated_tokens == 8, result
        assert result.session.session_id == self.session_id
        self.tokens.append(tokens)
        self.texts.append(text)
        return result.server_id

    def replay(self, stub) -> list[list[int]]:
        """The same turns on `stub`'s server, which keeps the session in memory throughout."""
        session = stub.CreateSession(self.pb2.CreateSessionRequest(), timeout=30).session_id
        turns = []
        for text in self.texts:
            turns.append([t for response in stub.Generate(
                self.pb2.GenerateRequest(session_id=session, prompt_text=text, max_new_tokens=8,
                                         ignore_eos=True), timeout=60)
                for t in response.token_ids])
        return turns


def main() -> None:
    binary, bench, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)  # no Prometheus data or logs of an earlier run
    work.mkdir(parents=True)
    [nginx_binary, openssl] = require_tools("nginx", "openssl")
    make_certificate(openssl, work)
    pb2, pb2_grpc = stubs()
    (work / "token").write_text(TOKEN + "\n")
    store = work / "sessions"  # what a ReadWriteMany volume is to the Kubernetes replicas
    replicas = [Sinkserve(binary, work, f"replica-{i}",
                          ("--auth-token-file", str(work / "token"), "--session-store", str(store),
                           "--session-persist", "turn"))
                for i in range(3)]
    for replica in replicas:
        replica.wait_serving()
    port, tls_port = free_port(), free_port()
    nginx = Process([nginx_binary, "-c", str(nginx_config(work, replicas, port, tls_port)),
                     "-p", str(work),
                     "-e", str(work / "nginx-error.log")], work / "nginx.out")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        def listening() -> bool:
            assert nginx.popen.poll() is None, f"nginx exited:\n{nginx.log()}"
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                return False
        wait_for(listening, 30, "nginx to listen")
        stub = pb2_grpc.SinkserveStub(channel)

        # Multi-turn conversations: every turn on the replica that created the session.
        conversations = [Conversation(f"conversation-{i}", stub, pb2) for i in range(CONVERSATIONS)]
        for conversation in conversations:
            conversation.create()
            conversation.replica = conversation.turn("hello")
        for turn in range(2):
            for conversation in conversations:
                assert conversation.turn(f"turn {turn}") == conversation.replica, conversation.key
        spread = Counter(c.replica for c in conversations)
        print(f"affinity_test: {CONVERSATIONS} conversations x 3 turns, each on one replica; "
              f"spread {dict(sorted(spread.items()))}")
        assert set(spread) == {r.server_id for r in replicas}, spread
        # Calls without the header spread too (by request id).
        one_shot = Counter()
        for i in range(12):
            for response in stub.Generate(pb2.GenerateRequest(prompt_text=f"one-shot {i}",
                                                              max_new_tokens=2),
                                          metadata=(AUTHORIZATION,), timeout=60):
                if response.HasField("result"):
                    one_shot[response.result.server_id] += 1
        print(f"affinity_test: one-shot calls without x-session-id: {dict(sorted(one_shot.items()))}")
        assert len(one_shot) >= 2, one_shot

        # sinkserve-bench as a client of the deployed server: TLS to nginx (its certificate
        # checked against --tls-ca) and the token, 3-turn conversations, each request with its
        # session's x-session-id. Without affinity, turns 2 and 3 would land on another replica
        # and get NOT_FOUND.
        report_path = work / "bench.json"
        subprocess.run([bench, "load", "--target", f"127.0.0.1:{tls_port}", "--tls-ca",
                        str(work / "tls.crt"), "--tls-server-name", "localhost",
                        "--auth-token-file",
                        str(work / "token"), "--turns", "3", "--requests", "9", "--concurrency", "3",
                        "--prompt-tokens", "8", "--max-new-tokens", "4", "--warmup", "0",
                        "--json", str(report_path)], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        report = json.loads(report_path.read_text())
        assert report["completed"] == 27 and report["errors"] == {}, report["errors"]
        print(f"affinity_test: sinkserve-bench over TLS with a token through nginx: 9 conversations x 3 "
              f"turns, {report['completed']:.0f} completed, 0 NOT_FOUND")

        # Kill the replica of the first conversation (SIGKILL: no drain): its conversations
        # continue on the others, restored from the store; the others stay where they are.
        victim = next(r for r in replicas if r.server_id == conversations[0].replica)
        victim.kill()
        lost = [c for c in conversations if c.replica == victim.server_id]
        kept = [c for c in conversations if c.replica != victim.server_id]
        for conversation in kept:
            assert conversation.turn("after the kill") == conversation.replica, conversation.key
        for conversation in lost:
            moved = conversation.turn("after the kill")  # NOT_FOUND would raise here
            assert moved != victim.server_id, conversation.key
            assert conversation.turn("and again") == moved, conversation.key
            conversation.replica = moved
        # Tokens: identical to a server that never lost a session.
        reference = Sinkserve(binary, work, "reference")
        reference.wait_serving()
        try:
            reference_stub = pb2_grpc.SinkserveStub(
                grpc.insecure_channel(f"127.0.0.1:{reference.port}"))
            for conversation in conversations:
                assert conversation.replay(reference_stub) == conversation.tokens, conversation.key
        finally:
            reference.stop()
        print(f"affinity_test: killed {victim.server_id}: {len(kept)} conversations stayed, "
              f"{len(lost)} continued on {sorted({c.replica for c in lost})} from the session "
              "store, 0 NOT_FOUND; every turn's tokens equal a reference server's")
    finally:
        nginx.stop()
        for replica in replicas:
            if replica.popen.poll() is None:
                replica.stop()


if __name__ == "__main__":
    main()
