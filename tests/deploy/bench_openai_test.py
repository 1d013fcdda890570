#!/usr/bin/env python3
"""`sinkserve-bench load --api openai` (issue 15) against two servers of that API on loopback:

  - the real `sinkserve serve` with its HTTP port: every request completes, the token counts
    are the asked ones (ignore_eos), and the server's own counters grew by as many requests
    (`sinkserve_requests_total{api="openai"}`) and generated tokens;
  - a foreign one, written here on Python's http.server, that streams fixed text in OpenAI's
    chunk format without a `usage` chunk (the bench then counts chunks): the bench's counts
    match what it served, and the requests it got are the OpenAI shape the bench promises
    (token-id prompts, max_tokens, stream) — so the bench is not tied to sinkserve.

Usage: bench_openai_test.py SINKSERVE_BINARY SINKSERVE_BENCH_BINARY WORK_DIR"""
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

from deploy_support import Sinkserve, free_port, metric

REQUESTS, WARMUP, PROMPT_TOKENS, NEW_TOKENS = 12, 1, 16, 20
OPENAI_OK = 'sinkserve_requests_total{api="openai",code="OK",rpc="/v1/completions"}'


def run_bench(bench: str, url: str, json_path: Path) -> dict:
    """One closed-loop run; its --json report with the per-request details."""
    completed = subprocess.run(
        [bench, "load", "--api", "openai", "--url", url, "--requests", str(REQUESTS),
         "--warmup", str(WARMUP), "--concurrency", "4", "--prompt-tokens", str(PROMPT_TOKENS),
         "--max-new-tokens", str(NEW_TOKENS), "--seed", "3", "--json", str(json_path),
         "--save-detailed"],
        capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    print(completed.stdout)
    return json.loads(json_path.read_text())


def check_report(report: dict) -> None:
    assert report["completed"] == REQUESTS and report["failed"] == 0, report
    assert report["errors"] == {} and report["aborted"] == "", report
    assert report["input_lens"] == [PROMPT_TOKENS] * REQUESTS, report["input_lens"]
    assert report["output_lens"] == [NEW_TOKENS] * REQUESTS, report["output_lens"]
    assert report["total_output_tokens"] == REQUESTS * NEW_TOKENS, report
    assert 0 < report["mean_ttft_ms"] < report["mean_e2el_ms"], report


def check_sinkserve(binary: str, bench: str, work: Path) -> None:
    server = Sinkserve(binary, work, "bench-openai", ("--max-batch", "4"))
    try:
        server.wait_serving()
        requests, generated = metric(server, OPENAI_OK), metric(server, "sinkserve_generation_tokens_total")
        report = run_bench(bench, f"http://127.0.0.1:{server.http_port}", work / "sinkserve.json")
        check_report(report)
        assert report["model"]["model_name"] == "demo", report["model"]
        # The bench's warmup requests reach the server too.
        sent = REQUESTS + WARMUP
        assert metric(server, OPENAI_OK) == requests + sent, metric(server, OPENAI_OK) - requests
        assert metric(server, "sinkserve_generation_tokens_total") == generated + sent * NEW_TOKENS
        assert server.stop() == 0, server.log()
    finally:
        if server.popen.poll() is None:
            server.kill()


class ForeignServer(http.server.BaseHTTPRequestHandler):
    """GET /v1/models and a streamed POST /v1/completions of `max_tokens` chunks of fixed text,
    ending `data: [DONE]`; each request body is kept in `bodies`."""
    protocol_version = "HTTP/1.1"
    bodies: list = []
    lock = threading.Lock()

    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [{"id": "fixed-model", "object": "model"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.bodies.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(request["max_tokens"]):
            chunk = {"id": "cmpl-x", "object": "text_completion", "model": request["model"],
                     "choices": [{"index": 0, "text": f" tok{i}", "logprobs": None,
                                  "finish_reason": "length" if i + 1 == request["max_tokens"]
                                  else None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def log_message(self, *args):
        pass


def check_foreign(bench: str, work: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), ForeignServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        report = run_bench(bench, f"http://127.0.0.1:{server.server_port}", work / "foreign.json")
        check_report(report)
        assert report["model"]["model_name"] == "fixed-model", report["model"]
        # One token per chunk here (sinkserve merges tokens that piled up into one chunk).
        assert all(len(gaps) == NEW_TOKENS - 1 for gaps in report["itls"]), report["itls"]
        bodies = ForeignServer.bodies
        assert len(bodies) == REQUESTS + WARMUP, len(bodies)
        for body in bodies:
            assert body["model"] == "fixed-model" and body["stream"] is True, body
            assert body["max_tokens"] == NEW_TOKENS, body
            prompt = body["prompt"]
            assert len(prompt) == PROMPT_TOKENS and all(isinstance(t, int) for t in prompt), body
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    binary, bench, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    check_sinkserve(binary, bench, work)
    check_foreign(bench, work)
    print("bench --api openai: OK")


if __name__ == "__main__":
    main()
