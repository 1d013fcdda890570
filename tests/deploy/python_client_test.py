#!/usr/bin/env python3
"""An independent client (issue 6): Python grpcio with stubs generated from proto/ at test time,
against the real `sinkserve serve` on loopback. Generate (greedy streams are reproducible; a
session continued over three turns equals one stream fed the same tokens), Score, the session
calls, GetModelInfo and the error codes of bad requests.

Usage: python_client_test.py SINKSERVE_BINARY WORK_DIR"""
import math
import sys
from pathlib import Path

import grpc

from deploy_support import Sinkserve, stubs


def main() -> None:
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    pb2, pb2_grpc = stubs()
    server = Sinkserve(binary, work, "python-client")
    try:
        server.wait_serving()
        stub = pb2_grpc.SinkserveStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))

        info = stub.GetModelInfo(pb2.GetModelInfoRequest())
        assert info.demo and info.server_id == "python-client", info

        def generate(**fields):
            ids, text, result = [], "", None
            for response in stub.Generate(pb2.GenerateRequest(**fields)):
                ids += list(response.token_ids)
                text += response.text
                if response.HasField("result"):
                    result = response.result
            return ids, text, result

        greedy = pb2.SamplingParams(temperature=0.0)
        ids, text, result = generate(prompt_text="The sink", max_new_tokens=24, ignore_eos=True,
                                     sampling=greedy)
        assert len(ids) == 24 and result.generated_tokens == 24, result
        assert result.finish_reason == pb2.FINISH_REASON_LENGTH, result
        assert generate(prompt_text="The sink", max_new_tokens=24, ignore_eos=True,
                        sampling=greedy)[0] == ids, "greedy streams differ"

        # A session over three turns equals one stream of the same tokens: feed turn by turn,
        # then the concatenation of prompts and outputs in one fresh stream.
        session = stub.CreateSession(pb2.CreateSessionRequest(sampling_defaults=greedy))
        stream_tokens = []
        for turn in ("Hello", " again", " and again"):
            prompt = list(turn.encode())  # the demo model's tokenizer is byte-level
            out, _, result = generate(session_id=session.session_id, prompt_token_ids=prompt,
                                      max_new_tokens=8, ignore_eos=True)
            assert len(out) == 8, result
            stream_tokens += prompt + out
        got = stub.GetSession(pb2.GetSessionRequest(session_id=session.session_id))
        assert got.tokens_seen >= len(stream_tokens) - 1, got
        listed = stub.ListSessions(pb2.ListSessionsRequest())
        assert session.session_id in [s.session_id for s in listed.sessions], listed
        one_stream, _, _ = generate(prompt_token_ids=stream_tokens[:-8], max_new_tokens=8,
                                    ignore_eos=True, sampling=greedy)
        assert one_stream == stream_tokens[-8:], (one_stream, stream_tokens[-8:])
        stub.CloseSession(pb2.CloseSessionRequest(session_id=session.session_id))
        try:
            stub.GetSession(pb2.GetSessionRequest(session_id=session.session_id))
            raise AssertionError("a closed session was found")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error

        # Score: the final result agrees with its own per-token NLLs.
        nll, result = [], None
        for response in stub.Score(pb2.ScoreRequest(text="Perplexity of a short text.",
                                                    return_token_nll=True)):
            nll += list(response.token_nll)
            if response.HasField("result"):
                result = response.result
        assert result.scored_tokens == len(nll) == result.tokens - 1, result
        assert math.isclose(result.nll_mean, sum(nll) / len(nll), rel_tol=1e-9), result
        assert math.isclose(result.perplexity, math.exp(result.nll_mean), rel_tol=1e-9)

        # Bad requests: the code and the field name.
        try:
            generate(prompt_text="x", sampling=pb2.SamplingParams(top_p=1.5))
            raise AssertionError("top_p 1.5 was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            assert "top_p" in error.details(), error.details()
        print("python client: Generate, sessions, Score, ModelInfo and errors as expected")
    finally:
        assert server.stop() == 0, server.log()


if __name__ == "__main__":
    main()
