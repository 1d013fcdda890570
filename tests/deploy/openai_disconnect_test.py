#!/usr/bin/env python3
"""A client that disconnects from the OpenAI HTTP API (issue 15) cancels its request and frees
its place within a step, whatever the request is waiting for, against the real `sinkserve
serve --max-batch 1` on loopback, with raw sockets as the clients (they close when told):

  (a) a non-streamed completion, running, whose client closes after 200 ms: the running gauge
      drops to 0 at once, far short of its max_tokens, and it counts as cancelled;
  (b) with one long request running, a queued non-streamed and a queued streamed request whose
      clients close: the waiting gauge drops to 0 while the first still runs, and when the
      first ends nothing else was admitted, prefilled or generated;
  (c) an echo + logprobs request (lm_eval's log-likelihood call) whose client closes while its
      30000-token prompt is being scored: the scoring stops at once;
  (d) the server serves a new request afterwards.

Usage: openai_disconnect_test.py SINKSERVE_BINARY WORK_DIR"""
import http.client
import json
import socket
import sys
import threading
import time
from pathlib import Path

from deploy_support import Sinkserve, metric, wait_for

RUNNING = "sinkserve_num_requests_running"
WAITING = "sinkserve_num_requests_waiting"
ADMITTED = "sinkserve_request_queue_time_seconds_count"  # one observation per admission
GENERATED = "sinkserve_generation_tokens_total"
PROMPT_TOKENS = "sinkserve_prompt_tokens_total"
CANCELLED = 'sinkserve_request_success_total{finish_reason="cancelled"}'
HTTP_CANCELLED = 'sinkserve_requests_total{api="openai",code="CANCELLED",rpc="/v1/completions"}'
# How soon a closed client's place must be free: a decode step of the demo model takes a few
# milliseconds, a scoring step tens; the margin is for a loaded CI machine and ASan. The
# requests closed run for 3-20 s when not cancelled, and (a) and (b) also check what ran.
FREED_WITHIN_S = 3.0


def open_request(server: Sinkserve, body: dict) -> socket.socket:
    """A POST /v1/completions sent on a raw socket, not read: the caller closes it."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.http_port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def close_and_time(server: Sinkserve, sock: socket.socket, gauge: str) -> float:
    """Closes `sock` and returns the seconds until `gauge` reads 0."""
    sock.close()
    closed = time.monotonic()
    wait_for(lambda: metric(server, gauge) == 0, 30, f"{gauge} to drop to 0", interval_s=0.002)
    return time.monotonic() - closed


def complete(server: Sinkserve, body: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    connection.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = json.loads(response.read())
    connection.close()
    assert response.status == 200, data
    return data


def main() -> None:
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    server = Sinkserve(binary, work, "openai-disconnect", ("--max-batch", "1"))
    try:
        server.wait_serving()
        long_request = {"prompt": "Hello", "max_tokens": 4000, "ignore_eos": True}

        # (a) A running non-streamed completion whose client closes after 200 ms.
        generated, cancelled = metric(server, GENERATED), metric(server, CANCELLED)
        http_cancelled = metric(server, HTTP_CANCELLED)
        sock = open_request(server, long_request)
        wait_for(lambda: metric(server, RUNNING) == 1, 30, "the request to run", interval_s=0.01)
        time.sleep(0.2)
        freed_s = close_and_time(server, sock, RUNNING)
        ran = metric(server, GENERATED) - generated
        print(f"(a) non-streamed: slot freed {freed_s * 1e3:.1f} ms after the client closed, "
              f"after {ran:.0f} of 4000 tokens")
        assert freed_s < FREED_WITHIN_S, freed_s
        assert ran < 4000, ran
        wait_for(lambda: metric(server, CANCELLED) == cancelled + 1, 5,
                 "the request to count as cancelled")
        wait_for(lambda: metric(server, HTTP_CANCELLED) == http_cancelled + 1, 5,
                 "the HTTP request to count as CANCELLED")

        # (b) One request runs (--max-batch 1); two more wait, and their clients close.
        admitted, generated = metric(server, ADMITTED), metric(server, GENERATED)
        prompt_tokens, http_cancelled = metric(server, PROMPT_TOKENS), metric(server, HTTP_CANCELLED)
        first = {"prompt": "First", "max_tokens": 600, "ignore_eos": True}
        result = {}
        runner = threading.Thread(target=lambda: result.update(complete(server, first)))
        runner.start()
        wait_for(lambda: metric(server, RUNNING) == 1, 30, "the first request to run",
                 interval_s=0.01)
        queued = [open_request(server, {"prompt": "B" * 200, "max_tokens": 50,
                                        "ignore_eos": True}),
                  open_request(server, {"prompt": "C" * 300, "max_tokens": 50, "stream": True,
                                        "ignore_eos": True})]
        wait_for(lambda: metric(server, WAITING) == 2, 30, "two requests to queue",
                 interval_s=0.01)
        queued[0].close()
        freed_s = close_and_time(server, queued[1], WAITING)
        print(f"(b) queued: both left the queue {freed_s * 1e3:.1f} ms after their clients closed")
        assert freed_s < FREED_WITHIN_S, freed_s
        assert runner.is_alive() and metric(server, RUNNING) == 1, \
            "the queue emptied only because the first request ended"
        runner.join(120)
        assert result["usage"]["completion_tokens"] == 600, result
        wait_for(lambda: metric(server, RUNNING) == 0, 5, "the first request to end")
        assert metric(server, ADMITTED) == admitted + 1, "a closed queued request was admitted"
        assert metric(server, GENERATED) == generated + 600, "a closed queued request generated"
        assert metric(server, PROMPT_TOKENS) == prompt_tokens + len("First"), \
            "a closed queued request was prefilled"
        assert metric(server, HTTP_CANCELLED) == http_cancelled + 2, \
            metric(server, HTTP_CANCELLED) - http_cancelled

        # (c) An echo being scored (max_tokens 0: only the Score path runs).
        sock = open_request(server, {"prompt": "word " * 6000, "max_tokens": 0, "echo": True,
                                     "logprobs": 1})
        wait_for(lambda: metric(server, RUNNING) == 1, 30, "the scoring to run", interval_s=0.01)
        time.sleep(0.2)
        freed_s = close_and_time(server, sock, RUNNING)
        print(f"(c) echo: scoring stopped {freed_s * 1e3:.1f} ms after the client closed")
        assert freed_s < FREED_WITHIN_S, freed_s

        # (d) Still serving.
        done = complete(server, {"prompt": "ok", "max_tokens": 3, "ignore_eos": True})
        assert done["usage"]["completion_tokens"] == 3, done
        assert server.stop() == 0, server.log()
        print("openai disconnect: OK")
    finally:
        if server.popen.poll() is None:
            server.kill()


if __name__ == "__main__":
    main()
