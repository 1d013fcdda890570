#!/usr/bin/env python3
"""The README's first command (issue 19): `scripts/run.sh` on a built tree skips the install and
the build, prints commands that call the server, and leaves `sinkserve serve` running in the
foreground until SIGINT (Ctrl-C), which drains it to exit 0. The printed commands are checked
against the server: the grpcurl line's request and address through grpcio (grpcurl is not in
Debian), the curl lines run as printed. Arguments other than flags still pass through to sinkserve.

Usage: run_script_test.py BUILD_DIR WORK_DIR"""
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

from deploy_support import SOURCE_DIR, Process, free_port, stubs, wait_for

RUN_SH = str(SOURCE_DIR / "scripts/run.sh")


def printed_line(log: str, start: str) -> str:
    """The command run.sh printed that starts with `start` (its lines are indented by two)."""
    lines = [line.strip() for line in log.splitlines() if line.startswith("  " + start)]
    assert len(lines) == 1, f"expected one printed '{start}' line:\n{log}"
    return lines[0]


def main() -> None:
    build, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BUILD_DIR"] = str(build)  # run.sh's build directory: the one under test
    pb2, pb2_grpc = stubs()

    # A subcommand passes through, as before.
    tokenized = subprocess.run([RUN_SH, "tokenize", "--text", "hi", "--json"],
                               capture_output=True, text=True, timeout=120)
    assert tokenized.returncode == 0, tokenized.stderr
    assert '"ids"' in tokenized.stdout, tokenized.stdout

    port, metrics_port = free_port(), free_port()
    flags = ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
             "--http-port", "-1", "--threads", "1"]
    serve_help = subprocess.run([str(build / "server/sinkserve"), "serve", "--help"],
                                capture_output=True, text=True, check=True).stdout
    http = "--http-port" in serve_help  # the OpenAI-compatible API, once it is there
    if http:
        flags += ["--http-port", str(free_port())]
    started = time.monotonic()
    server = Process([RUN_SH, *flags], work / "run.log")
    try:
        def serving():
            assert server.popen.poll() is None, f"run.sh exited:\n{server.log()}"
            return subprocess.run([str(build / "server/sinkserve"), "health", "--address",
                                   f"127.0.0.1:{port}", "--timeout-s", "1"],
                                  capture_output=True).returncode == 0
        wait_for(serving, 120, "health SERVING")
        print(f"run.sh: SERVING {time.monotonic() - started:.1f} s after the start "
              "(install check, build check, model load)")
        log = server.log()

        # grpcurl [options] -d JSON ADDRESS SERVICE/METHOD: send that request to that address.
        words = shlex.split(printed_line(log, "grpcurl "))
        assert words[1] == "-plaintext", words
        address, method = words[-2], words[-1]
        assert address == f"127.0.0.1:{port}", address
        assert method == "sinkserve.v1.Sinkserve/Generate", method
        request = json_format.Parse(words[words.index("-d") + 1], pb2.GenerateRequest())
        stub = pb2_grpc.SinkserveStub(grpc.insecure_channel(address))
        ids, result = [], None
        for response in stub.Generate(request, timeout=60):
            ids += list(response.token_ids)
            if response.HasField("result"):
                result = response.result
        assert result is not None and result.generated_tokens == len(ids) > 0, (ids, result)

        # curl ... | grep '^sinkserve_': the request above is counted.
        metrics = subprocess.run(printed_line(log, "curl -s 127.0.0.1:" + str(metrics_port)),
                                 shell=True, capture_output=True, text=True, timeout=30)
        assert metrics.returncode == 0, metrics
        assert "sinkserve_generation_tokens_total" in metrics.stdout, metrics.stdout
        if http:
            completion = subprocess.run(printed_line(log, "curl -s 127.0.0.1:" + flags[-1]),
                                        shell=True, capture_output=True, text=True, timeout=60)
            assert completion.returncode == 0 and '"choices"' in completion.stdout, completion
        else:
            assert "/v1/completions" not in log, "an HTTP line without an HTTP server"
    finally:
        code = server.stop(signal.SIGINT)
    log = server.log()
    assert code == 0, f"exit {code} after SIGINT:\n{log}"
    assert "SIGINT" in log and "stopped" in log, f"no drain on SIGINT:\n{log}"
    print("run.sh: served, answered the printed commands, drained on SIGINT, exit 0")


if __name__ == "__main__":
    main()
