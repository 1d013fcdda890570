#!/usr/bin/env python3
"""The OpenAI-compatible HTTP API (issue 15) with clients written by others: the `openai`
Python package, curl, Python's http.client, against the real `sinkserve serve` on loopback,
with grpcio (stubs generated from proto/) as the reference for the same engine.

  - `openai` completions equal gRPC Generate for the same seed and sampling, streamed or not;
  - an SSE stream read raw by `curl -N` is well-formed event by event and ends with [DONE];
  - echo + logprobs + max_tokens 0 gives the Score RPC's per-token NLLs (1e-5);
  - n: 3 with a seed gives three choices that repeat; a session continued over HTTP equals
    one continued over gRPC;
  - bad input gets the right status and OpenAI's error shape (bad JSON, wrong types, an
    unknown model, logprobs > 20, an oversize body, a missing token, 40 streams against
    --max-queue 4), and the server keeps serving;
  - a client that closes mid-stream frees its slot, as the metrics show;
  - with --tls-cert/--tls-key the HTTP port speaks HTTPS only (a fresh openssl certificate);
  - a model that fails to load ends the program (exit 1) with the HTTP port already open.

Usage: openai_client_test.py SINKSERVE_BINARY WORK_DIR"""
import concurrent.futures
import http.client
import json
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import openai

from deploy_support import Sinkserve, metric, stubs, wait_for

TOKEN = "openai-test-token"
MAX_BODY = 65536


def post(server: Sinkserve, path: str, body: bytes, token: str | None = TOKEN):
    """(status, headers, parsed JSON body) of a raw POST."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(data)


def check_error(server, body: bytes, status: int, param, path="/v1/completions", token=TOKEN):
    got, headers, error = post(server, path, body, token)
    assert got == status, (got, error)
    assert set(error) == {"error"}, error
    assert set(error["error"]) == {"message", "type", "param", "code"}, error
    assert error["error"]["message"], error
    if param is not None:
        assert error["error"]["param"] == param, error
    return headers, error


def main() -> None:
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    (work / "token").write_text(TOKEN + "\n")
    pb2, pb2_grpc = stubs()
    server = Sinkserve(binary, work, "openai-client",
                       ("--auth-token-file", str(work / "token"), "--max-queue", "4",
                        "--max-batch", "4", "--max-message-bytes", str(MAX_BODY)))
    try:
        server.wait_serving()
        auth = (("authorization", f"Bearer {TOKEN}"),)
        stub = pb2_grpc.SinkserveStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key=TOKEN,
                               max_retries=0)

        def generate(**fields):
            ids, text, result = [], "", None
            for response in stub.Generate(pb2.GenerateRequest(**fields), metadata=auth):
                ids += list(response.token_ids)
                text += response.text
                if response.HasField("result"):
                    result = response.result
            return ids, text, result

        # Health, readiness, the model list, tokenize/detokenize.
        for path in ("/health", "/ready"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}") as response:
                assert response.status == 200 and json.load(response)["status"] == "SERVING"
        models = client.models.list().data
        assert [m.id for m in models] == ["demo"], models
        status, _, tokens = post(server, "/tokenize", b'{"prompt": "Hi there"}')
        assert status == 200 and tokens["tokens"] == list(b"Hi there"), tokens
        status, _, text = post(server, "/detokenize", json.dumps({"tokens": tokens["tokens"]}).encode())
        assert status == 200 and text["prompt"] == "Hi there", text

        # The same text as gRPC Generate for the same seed and sampling, streamed and not.
        sampling = dict(temperature=0.8, top_p=0.9, seed=7)
        _, grpc_text, _ = generate(prompt_text="The sink", max_new_tokens=32, ignore_eos=True,
                                   sampling=pb2.SamplingParams(top_k=40, **sampling))
        completion = client.completions.create(model="demo", prompt="The sink", max_tokens=32,
                                               extra_body={"ignore_eos": True, "top_k": 40},
                                               **sampling)
        assert completion.choices[0].text == grpc_text, (completion, grpc_text)
        assert completion.choices[0].finish_reason == "length", completion
        assert completion.usage.prompt_tokens == len("The sink"), completion.usage
        assert completion.usage.completion_tokens == 32, completion.usage
        streamed, usage = "", None
        for chunk in client.completions.create(model="demo", prompt="The sink", max_tokens=32,
                                               stream=True, stream_options={"include_usage": True},
                                               extra_body={"ignore_eos": True, "top_k": 40},
                                               **sampling):
            if chunk.choices:
                streamed += chunk.choices[0].text
            if chunk.usage:
                usage = chunk.usage
        assert streamed == grpc_text, (streamed, grpc_text)
        assert usage.completion_tokens == 32, usage

        # A raw SSE stream: every event is `data: <json>` and a blank line; the last is [DONE].
        curl = shutil.which("curl")
        if curl:
            raw = subprocess.run(
                [curl, "-sN", f"http://127.0.0.1:{server.http_port}/v1/completions",
                 "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json",
                 "-d", json.dumps({"prompt": "Hello", "max_tokens": 20, "stream": True,
                                   "temperature": 0, "ignore_eos": True})],
                check=True, capture_output=True, text=True).stdout
            assert raw.endswith("data: [DONE]\n\n"), raw[-200:]
            events = raw.split("\n\n")[:-1]
            text, finish = "", None
            for event in events[:-1]:
                assert event.startswith("data: "), event
                chunk = json.loads(event[len("data: "):])
                assert chunk["object"] == "text_completion" and chunk["model"] == "demo", chunk
                text += chunk["choices"][0]["text"]
                finish = chunk["choices"][0]["finish_reason"] or finish
            assert finish == "length", raw
            assert text == client.completions.create(model="demo", prompt="Hello", max_tokens=20,
                                                     temperature=0,
                                                     extra_body={"ignore_eos": True}).choices[0].text
        else:
            print("curl not installed: the raw SSE check is skipped")

        # echo + logprobs + max_tokens 0: the Score RPC's per-token NLLs.
        prompt = "Perplexity of a short text."
        echoed = client.completions.create(model="demo", prompt=prompt, max_tokens=0, echo=True,
                                           logprobs=1)
        choice = echoed.choices[0]
        assert choice.text == prompt, choice
        nll = []
        for response in stub.Score(pb2.ScoreRequest(text=prompt, return_token_nll=True),
                                   metadata=auth):
            nll += list(response.token_nll)
        logprobs = choice.logprobs.token_logprobs
        assert logprobs[0] is None and len(logprobs) == len(nll) + 1, logprobs
        for got, want in zip(logprobs[1:], nll):
            assert abs(got + want) <= 1e-5, (got, want)
        for chosen, top in zip(logprobs[1:], choice.logprobs.top_logprobs[1:]):
            assert max(top.values()) >= chosen - 1e-9, top

        # Top-N under greedy: the chosen token is the most likely, and the N are sorted
        # probabilities that sum to at most 1.
        greedy = client.completions.create(model="demo", prompt="Hello", max_tokens=8,
                                           temperature=0, logprobs=20,
                                           extra_body={"ignore_eos": True})
        lp = greedy.choices[0].logprobs
        for token, chosen, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            assert len(top) == 20, top
            assert top[token] == chosen == max(top.values()), (token, chosen, top)
            assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5, top

        # n: 3 with a seed: three choices, the same again.
        def three():
            result = client.completions.create(model="demo", prompt="Once", max_tokens=16, n=3,
                                               seed=11, temperature=1.0,
                                               extra_body={"ignore_eos": True})
            return [c.text for c in sorted(result.choices, key=lambda c: c.index)]
        first = three()
        assert len(first) == 3 and first == three(), first
        assert len(set(first)) > 1, f"three seeds gave one text: {first}"

        # A session continued over HTTP equals one continued over gRPC (greedy).
        def http_turns():
            body = {"prompt": "Hello", "max_tokens": 8, "temperature": 0, "ignore_eos": True,
                    "keep_session": True}
            status, _, first_turn = post(server, "/v1/completions", json.dumps(body).encode())
            assert status == 200 and first_turn["session_id"], first_turn
            second = {"prompt": " again", "max_tokens": 8, "temperature": 0, "ignore_eos": True,
                      "session_id": first_turn["session_id"]}
            status, _, second_turn = post(server, "/v1/completions", json.dumps(second).encode())
            assert status == 200, second_turn
            return [first_turn["choices"][0]["text"], second_turn["choices"][0]["text"]]

        def grpc_turns():
            greedy_sampling = pb2.SamplingParams(temperature=0.0)
            first_ids, first_text, result = generate(prompt_text="Hello", max_new_tokens=8,
                                                     ignore_eos=True, keep_session=True,
                                                     sampling=greedy_sampling)
            _, second_text, _ = generate(prompt_text=" again", max_new_tokens=8, ignore_eos=True,
                                         session_id=result.session.session_id,
                                         sampling=greedy_sampling)
            return [first_text, second_text]
        assert http_turns() == grpc_turns()

        # Bad input: the status, OpenAI's error shape, the parameter named.
        check_error(server, b"{not json", 400, "body")
        check_error(server, b'{"prompt": "x", "max_tokens": "ten"}', 400, "max_tokens")
        check_error(server, b'{"prompt": 5}', 400, "prompt")
        check_error(server, b'{"prompt": "x", "temperature": -1}', 400, "temperature")
        check_error(server, b'{"prompt": "x", "model": "gpt-4"}', 404, "model")
        check_error(server, b'{"prompt": "x", "logprobs": 21}', 400, "logprobs")
        check_error(server, b'{"prompt": "x", "session_id": "no-such-session"}', 404, "session_id")
        check_error(server, json.dumps({"prompt": "x" * MAX_BODY}).encode(), 413, "body")
        check_error(server, b'{"prompt": "x"}', 401, "authorization", token=None)
        check_error(server, b'{"prompt": "x"}', 401, "authorization", token="wrong")
        check_error(server, b'{"messages": []}', 400, "messages", path="/v1/chat/completions")
        try:
            client.completions.create(model="demo", prompt="x", logprobs=21)
            raise AssertionError("logprobs 21 was accepted")
        except openai.BadRequestError as error:
            assert "logprobs" in str(error), error

        # 40 streams against --max-batch 4 --max-queue 4: 429 with Retry-After for the rest.
        def stream(_):
            connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
            connection.request("POST", "/v1/completions",
                               body=json.dumps({"prompt": "Hello", "max_tokens": 300, "stream": True,
                                                "ignore_eos": True}).encode(),
                               headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            data = response.read().decode()
            connection.close()
            if response.status == 429:
                assert response.getheader("Retry-After"), response.getheaders()
                assert json.loads(data)["error"]["code"] == "resource_exhausted", data
            else:
                assert response.status == 200 and data.endswith("data: [DONE]\n\n"), data[-300:]
            return response.status
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(stream, range(40)))
        assert statuses.count(429) >= 1 and statuses.count(200) >= 8, statuses
        assert set(statuses) == {200, 429}, statuses

        # A client closing mid-stream: its request is cancelled and its slot freed.
        cancelled = metric(server, 'sinkserve_request_success_total{api="openai",finish_reason="cancelled"}')
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        connection.request("POST", "/v1/completions",
                           body=json.dumps({"prompt": "Hello", "max_tokens": 4000, "stream": True,
                                            "ignore_eos": True}).encode(),
                           headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        assert response.status == 200
        response.fp.readline()  # the first event has come
        assert metric(server, "sinkserve_num_requests_running") == 1
        connection.sock.close()
        response.close()
        closed = time.monotonic()
        wait_for(lambda: metric(server, "sinkserve_num_requests_running") == 0, 5,
                 "the closed stream's slot to be freed", interval_s=0.005)
        freed_s = time.monotonic() - closed
        assert metric(server, 'sinkserve_request_success_total{api="openai",finish_reason="cancelled"}') == \
            cancelled + 1
        print(f"slot freed {freed_s * 1e3:.0f} ms after the client closed")

        # Still serving, over both APIs.
        assert client.completions.create(model="demo", prompt="ok", max_tokens=2).choices[0].text
        assert generate(prompt_text="ok", max_new_tokens=2)[2].generated_tokens >= 1
        assert metric(server, 'sinkserve_requests_total{api="openai",code="OK",rpc="/v1/completions"}') > 0
        assert server.stop() == 0, server.log()
        check_tls(binary, work)
        failed = subprocess.run([binary, "serve", "--host", "127.0.0.1", "--port", "0",
                                 "--metrics-port", "-1", "--http-port", "0", "--model",
                                 str(work / "no-such-model")], capture_output=True, timeout=30)
        assert failed.returncode == 1, failed
        print("openai client: OK")
    finally:
        if server.popen.poll() is None:
            server.kill()


def check_tls(binary: str, work: Path) -> None:
    """HTTPS with a trusted certificate works; plaintext HTTP on that port does not."""
    openssl = shutil.which("openssl")
    if openssl is None:
        print("openssl not installed: the TLS check is skipped")
        return
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = Sinkserve(binary, work, "openai-tls", ("--tls-cert", str(cert), "--tls-key", str(key)))
    try:
        server.wait_serving()
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{server.http_port}/v1", api_key="x",
                               max_retries=0, http_client=openai.DefaultHttpxClient(verify=str(cert)))
        assert client.completions.create(model="demo", prompt="tls", max_tokens=3,
                                         extra_body={"ignore_eos": True}).usage.completion_tokens == 3
        plain = openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="x",
                              max_retries=0, timeout=5)
        try:
            plain.completions.create(model="demo", prompt="tls", max_tokens=3)
            raise AssertionError("plaintext HTTP was served on the TLS port")
        except openai.APIConnectionError:
            pass
        assert server.stop() == 0, server.log()
    finally:
        if server.popen.poll() is None:
            server.kill()


if __name__ == "__main__":
    main()
