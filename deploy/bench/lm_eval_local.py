#!/usr/bin/env python3
"""The offline parts of deploy/bench/lm-eval.sh: lm-evaluation-harness against sinkserve with no
Hugging Face hub (neither datasets nor tokenizers are downloaded).

    lm_eval_local.py prepare OUT_DIR --wikitext FILE [--docs 20] [--tokenizer FILE|demo]
        OUT_DIR/data.jsonl         the first --docs paragraphs of WikiText (200-1000 bytes
                                   each, headings left out), one {"text": ...} a line
        OUT_DIR/tasks/sinkserve_wikitext.yaml
                                   a loglikelihood_rolling task on it (dataset_path: json, the
                                   `datasets` builder that reads local files)
        OUT_DIR/tokenizer/         an HF tokenizer folder (tokenizer.json and
                                   tokenizer_config.json) that AutoTokenizer loads offline: the
                                   model's tokenizer.json, or with `demo` the demo model's byte
                                   tokenizer (id = byte value, <|endoftext|> = 256) built here

    lm_eval_local.py compare OUT_DIR --samples FILE --grpc HOST:PORT
        For every document lm_eval scored (its --log_samples file), the log-likelihood it got
        over POST /v1/completions (echo + logprobs) against our Score RPC on the same tokens
        (<|endoftext|> then the document, as lm_eval's rolling window is): they must agree.

Needs lm-eval's venv (transformers, tokenizers) plus grpcio and grpcio-tools (for `compare`)."""
import argparse
import importlib
import json
import math
import sys
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[2]
END_OF_TEXT = "<|endoftext|>"
TASK = "sinkserve_wikitext"


def paragraphs(wikitext: Path, count: int) -> list[str]:
    """The first `count` paragraphs of 200-1000 bytes: short enough that one rolling window of
    any model here (the demo's context is 2048 byte tokens) holds each."""
    docs = []
    for line in wikitext.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("=") or not 200 <= len(text.encode()) <= 1000:
            continue
        docs.append(text)
        if len(docs) == count:
            break
    return docs


def demo_tokenizer():
    """The demo model's tokenizer (engine/tokenizer: Tokenizer::ByteLevelDemo, id = byte value,
    <|endoftext|> = 256) in HF's terms: a BPE with no merges whose vocabulary is the 256 byte
    tokens, which byte fallback emits for every character's UTF-8 bytes."""
    from tokenizers import Tokenizer, decoders, models
    vocab = {f"<0x{byte:02X}>": byte for byte in range(256)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([END_OF_TEXT])
    assert tokenizer.token_to_id(END_OF_TEXT) == 256
    sample = "Robert Boulter = héllo 日本\n"
    assert tokenizer.encode(sample).ids == list(sample.encode())
    return tokenizer


def prepare(args) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    out = Path(args.out_dir)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    docs = paragraphs(Path(args.wikitext), args.docs)
    assert len(docs) == args.docs, f"{args.wikitext} has only {len(docs)} such paragraphs"
    with open(out / "data.jsonl", "w", encoding="utf-8") as data:
        for text in docs:
            data.write(json.dumps({"text": text}) + "\n")
    # JSON is YAML: no YAML writer needed.
    task = {"task": TASK, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str((out / "data.jsonl").resolve())}},
            "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                                    "bits_per_byte")],
            "metadata": {"version": 1.0}}
    (out / "tasks" / f"{TASK}.yaml").write_text(json.dumps(task, indent=2) + "\n")
    tokenizer = (demo_tokenizer() if args.tokenizer == "demo"
                 else Tokenizer.from_file(args.tokenizer))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT).save_pretrained(
        out / "tokenizer")
    print(f"{len(docs)} documents, task {TASK}, tokenizer in {out / 'tokenizer'}")


def score_stub(target: str):
    """A Sinkserve stub, the modules generated from proto/ with grpcio-tools."""
    import grpc
    from grpc_tools import protoc
    stubs = tempfile.mkdtemp(prefix="sinkserve-stubs-")
    assert protoc.main(["protoc", f"-I{SOURCE_DIR / 'proto'}", f"--python_out={stubs}",
                        f"--grpc_python_out={stubs}",
                        str(SOURCE_DIR / "proto/sinkserve/v1/sinkserve.proto")]) == 0
    sys.path.insert(0, stubs)
    pb2 = importlib.import_module("sinkserve.v1.sinkserve_pb2")
    pb2_grpc = importlib.import_module("sinkserve.v1.sinkserve_pb2_grpc")
    return pb2, pb2_grpc.SinkserveStub(grpc.insecure_channel(target))


def compare(args) -> None:
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(Path(args.out_dir) / "tokenizer")
    pb2, stub = score_stub(args.grpc)
    worst, count = 0.0, 0
    with open(args.samples, encoding="utf-8") as samples:
        for line in samples:
            sample = json.loads(line)
            text = sample["doc"]["text"]
            got = float(sample["resps"][0][0])  # logged as a string
            ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
            nll = []
            for response in stub.Score(pb2.ScoreRequest(token_ids=ids, return_token_nll=True)):
                nll += response.token_nll
            want = -math.fsum(nll)
            difference = abs(got - want)
            assert difference <= 1e-6 * abs(want) + 1e-6, (
                f"document {count}: lm_eval got {got}, the Score RPC {want}")
            worst, count = max(worst, difference), count + 1
    assert count > 0, f"{args.samples} holds no samples"
    print(f"{count} documents: lm_eval's log-likelihoods equal the Score RPC's "
          f"(largest difference {worst:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("out_dir")
    p.add_argument("--wikitext", required=True)
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--tokenizer", default="demo", help="a tokenizer.json, or demo")
    c = commands.add_parser("compare")
    c.add_argument("out_dir")
    c.add_argument("--samples", required=True)
    c.add_argument("--grpc", required=True)
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else compare(args)


if __name__ == "__main__":
    main()
