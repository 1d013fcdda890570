#!/usr/bin/env python3
"""Chat templates and POST /v1/chat/completions (issue 15), against references written by
others: Python's jinja2 (configured as Hugging Face's apply_chat_template configures it) for the
rendering, the `openai` package as the client, /v1/completions as the engine's reference.

  - our Jinja interpreter (`sinkserve chat-template`) renders the templates of
    tests/fixtures/chat_templates (ChatML, [INST] with a system prompt and raise_exception on bad
    alternation, Markdown with namespace/loop/filters/tests) byte for byte as jinja2 does, for
    fresh random message lists (unicode, quotes, newlines, template-like text); a template that
    raises fails with jinja2's message; syntax outside the subset is refused naming file:line;
  - `serve --chat-template FILE` on the demo model: client.chat.completions.create, streamed and
    not, with n, logprobs and include_usage, gives the same tokens as client.completions.create
    with the prompt jinja2 renders (same seed); errors name the param (messages[i].role, ...);
    a template that raises is 400 with its message; a bad template stops the server at start;
  - a model directory's tokenizer_config.json chat_template (with its bos/eos tokens) is found
    without the flag, and chat_template.jinja takes precedence over it;
  - without a template, 400 naming `messages` that says so.

Usage: chat_test.py SINKSERVE_BINARY WORK_DIR"""
import datetime
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.sandbox
import openai

from deploy_support import SOURCE_DIR, Sinkserve

TEMPLATES = SOURCE_DIR / "tests/fixtures/chat_templates"
FIXTURE_MODEL = SOURCE_DIR / "tests/fixtures/models/pythia_f32_d64"
PIECES = (list("abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?-_()[]'\"\\/%#@\n\t")
          + ["  ", "\n\n", " \n", "é", "ß", "中文", "😀", "\u3000", "\xa0", "\u2028", "\r\n", "{{ x }}",
             "{% if %}", "{#", "}}", "<|im_end|>", "[INST]", "None", "\x1f"])


def environment() -> jinja2.Environment:
    """jinja2 as HF's apply_chat_template sets it up: a sandbox with trim_blocks and
    lstrip_blocks, raise_exception and strftime_now as globals, and a tojson filter that is
    json.dumps without ASCII escaping."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.filters["tojson"] = tojson
    return env


def random_text(rng: random.Random, longest: int = 24) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, longest)))


def random_messages(rng: random.Random, longest: int = 24, turns: int = 6,
                    odd: bool = True) -> list[dict]:
    """A system prompt or not, then alternating user/assistant turns; sometimes a `name`, and
    when `odd`, sometimes a `tool` turn or a broken alternation."""
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": random_text(rng, longest)})
    for i in range(rng.randint(1, turns)):
        message = {"role": "user" if i % 2 == 0 else "assistant",
                   "content": random_text(rng, longest)}
        if rng.random() < 0.25:
            message["name"] = rng.choice([None, random_text(rng, 8)])
        messages.append(message)
    if odd and rng.random() < 0.15:
        messages.insert(rng.randint(0, len(messages)), {"role": "tool", "content": random_text(rng)})
    if odd and rng.random() < 0.15:
        victim = rng.randrange(len(messages))
        messages[victim]["role"] = rng.choice(["user", "assistant"])
    return messages


def render_reference(template_source: str, variables: dict):
    """(text, None) or (None, error message) from jinja2."""
    try:
        return environment().from_string(template_source).render(**variables), None
    except jinja2.exceptions.TemplateError as error:
        return None, str(error)


def check_interpreter(binary: str, work: Path, rng: random.Random) -> None:
    compared = raised = 0
    for path in sorted(TEMPLATES.glob("*.jinja")):
        source = path.read_text()
        for case in range(60):
            variables = {"messages": random_messages(rng),
                         "add_generation_prompt": rng.random() < 0.7,
                         "bos_token": rng.choice(["<s>", "", "<|endoftext|>"]),
                         "eos_token": rng.choice(["</s>", "<|endoftext|>"])}
            messages_file = work / "messages.json"
            messages_file.write_text(json.dumps(variables))
            ours = subprocess.run([binary, "chat-template", "--chat-template", str(path),
                                   "--messages", str(messages_file)], capture_output=True)
            want, error = render_reference(source, variables)
            context = f"{path.name} case {case}: {json.dumps(variables, ensure_ascii=False)}"
            if error is not None:
                assert ours.returncode == 1, (context, error, ours.stdout)
                assert error in ours.stderr.decode(), (context, error, ours.stderr)
                raised += 1
                continue
            assert ours.returncode == 0, (context, ours.stderr.decode())
            assert ours.stdout == want.encode(), (context, ours.stdout.decode(errors="replace"), want)
            compared += 1
    assert compared >= 120 and raised >= 5, (compared, raised)
    print(f"interpreter: {compared} renderings equal jinja2's byte for byte, {raised} raised alike")

    # Syntax outside the subset is refused naming the file, the line and the construct.
    bad = work / "unsupported.jinja"
    for line, what in (("{% macro x() %}{% endmacro %}", "macro"),
                       ("{{ messages | tojson(ensure_ascii=true) }}", "ensure_ascii"),
                       ("{{ cycler('a') }}", "cycler"),
                       ("{{ messages[0].content.format(1) }}", "format"),
                       ("{{ messages | wordwrap }}", "wordwrap"),
                       ("{% for m in messages %}{{ loop.cycle('a', 'b') }}{% endfor %}", "cycle"),
                       ("{{ 'unclosed }}", "never closed"),
                       ("{% if true %}no endif", "endif"),
                       # and at render time, what 64-bit integers and our bounds refuse
                       ("{{ 2 ** 64 }}", "integer overflow"),
                       ("{{ range(10000000) | length }}", "range"),
                       ("{{ messages[0].nope.frob }}", "undefined")):
        bad.write_text(f"{{% for m in messages %}}\n{{{{ m.content }}}}\n{{% endfor %}}\n{line}\n")
        result = subprocess.run([binary, "chat-template", "--chat-template", str(bad),
                                 "--messages", str(work / "messages.json")],
                                capture_output=True, text=True)
        assert result.returncode == 1 and what in result.stderr, (line, result.stderr)
        assert f"{bad}:4" in result.stderr, (line, result.stderr)


def post(port: int, path: str, body) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = json.loads(response.read())
    connection.close()
    return response.status, data


def check_error(server: Sinkserve, body, param: str, needle: str = "") -> None:
    status, error = post(server.http_port, "/v1/chat/completions", body)
    assert status == 400, (status, error)
    assert set(error["error"]) == {"message", "type", "param", "code"}, error
    assert error["error"]["param"] == param, (param, error)
    assert needle in error["error"]["message"], (needle, error)


def check_same_as_completions(client: openai.OpenAI, model: str, messages: list[dict],
                              prompt: str, max_tokens: int, seed: int) -> None:
    """Chat completions equal completions of the jinja2-rendered prompt (same seed and
    sampling): whole, streamed, n = 2, and logprobs."""
    sampling = dict(model=model, max_tokens=max_tokens, temperature=0.9, top_p=0.95, seed=seed)
    completion = client.completions.create(prompt=prompt, n=2, logprobs=3, **sampling)
    chat = client.chat.completions.create(messages=messages, n=2, logprobs=True, top_logprobs=3,
                                          **sampling)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-"), chat
    assert chat.usage.prompt_tokens == completion.usage.prompt_tokens, (chat.usage, completion.usage)
    assert chat.usage.completion_tokens == completion.usage.completion_tokens
    for want, got in zip(completion.choices, chat.choices, strict=True):
        assert got.index == want.index and got.message.role == "assistant", got
        assert got.message.content == want.text, (got.message.content, want.text)
        assert got.finish_reason == want.finish_reason, (got, want)
        tokens = got.logprobs.content
        assert [t.logprob for t in tokens] == want.logprobs.token_logprobs, (tokens, want.logprobs)
        # A character split across tokens is U+FFFD in each token's own text: compare bytes.
        joined = b"".join(bytes(t.bytes) for t in tokens).decode(errors="replace")
        assert joined == want.text or "\ufffd" in want.text, (joined, want.text)
        for token in tokens:
            assert len(token.top_logprobs) == 3, token
            assert bytes(token.bytes).decode(errors="replace") == token.token
            assert token.top_logprobs[0].logprob >= token.logprob - 1e-6, token

    stream = client.chat.completions.create(messages=messages, stream=True,
                                            stream_options={"include_usage": True}, **sampling)
    text, roles, finish, usage = "", [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role is not None:
                roles.append(choice.delta.role)
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert roles == ["assistant"], roles
    assert text == completion.choices[0].text, (text, completion.choices[0].text)
    assert finish == completion.choices[0].finish_reason, finish
    assert usage.prompt_tokens == completion.usage.prompt_tokens, usage


def check_demo_server(binary: str, work: Path, rng: random.Random) -> None:
    chatml = TEMPLATES / "chatml.jinja"
    server = Sinkserve(binary, work, "chat", ("--chat-template", str(chatml),
                                              "--max-prompt-tokens", "1024"))
    try:
        server.wait_serving()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="x",
                               max_retries=0)
        for _ in range(3):
            messages = [m for m in random_messages(rng) if m["role"] != "tool"]
            prompt, error = render_reference(chatml.read_text(), {
                "messages": messages, "add_generation_prompt": True, "bos_token": "",
                "eos_token": ""})
            assert error is None, error
            check_same_as_completions(client, "demo", messages, prompt, 24, rng.randrange(1000))
        # A session: two chat turns (each sending only its new messages) equal two completion
        # turns of the jinja2-rendered prompts.
        turns = [[{"role": "user", "content": random_text(rng, 12)}],
                 [{"role": "user", "content": random_text(rng, 12)}]]
        prompts = [render_reference(chatml.read_text(), {"messages": turn,
                                                         "add_generation_prompt": True})[0]
                   for turn in turns]
        texts = {}
        for api in ("completions", "chat"):
            session, texts[api] = None, []
            for turn, prompt in zip(turns, prompts):
                extra = {"session_id": session} if session else {"keep_session": True}
                common = dict(model="demo", max_tokens=6, temperature=0.8, seed=5,
                              extra_body=extra)
                if api == "chat":
                    answer = client.chat.completions.create(messages=turn, **common)
                    texts[api].append(answer.choices[0].message.content)
                else:
                    answer = client.completions.create(prompt=prompt, **common)
                    texts[api].append(answer.choices[0].text)
                session = answer.model_extra["session_id"]
        assert texts["chat"] == texts["completions"], texts

        # Content as a list of text parts, as OpenAI allows: the parts joined by newlines.
        parts = client.chat.completions.create(
            model="demo", max_tokens=8, seed=3, temperature=0.7,
            messages=[{"role": "user", "content": [{"type": "text", "text": "one"},
                                                   {"type": "text", "text": "two"}]}])
        joined = client.chat.completions.create(
            model="demo", max_tokens=8, seed=3, temperature=0.7,
            messages=[{"role": "user", "content": "one\ntwo"}])
        assert parts.choices[0].message.content == joined.choices[0].message.content

        # Bad requests name the param; the server keeps serving.
        check_error(server, {"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]},
                    "messages[1].role", "required")
        check_error(server, {"messages": [{"role": "user", "content": 12}]},
                    "messages[0].content", "string")
        check_error(server, {"messages": [{"role": 3, "content": "x"}]}, "messages[0].role")
        check_error(server, {"messages": "hi"}, "messages")
        check_error(server, {"messages": []}, "messages", "empty")
        check_error(server, {}, "messages", "required")
        check_error(server, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                    "messages[0].content[0].type")
        check_error(server, {"messages": [{"role": "user", "content": "x"}], "logprobs": True,
                             "top_logprobs": 21}, "top_logprobs")
        check_error(server, {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
                    "top_logprobs", "logprobs")
        check_error(server, {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
                    "temperature")
        check_error(server, {"messages": [{"role": "user", "content": "x" * 2000}]},
                    "messages")  # over --max-prompt-tokens after rendering
        status, _ = post(server.http_port, "/v1/chat/completions",
                         {"messages": [{"role": "user", "content": "still serving"}],
                          "max_tokens": 2})
        assert status == 200
    finally:
        assert server.stop() == 0, server.log()

    # Every template of ours served: chat equals completions of the jinja2 rendering (the
    # messages' members reach the template in the body's order, as tojson shows).
    for path in sorted(TEMPLATES.glob("*.jinja")):
        server = Sinkserve(binary, work, f"chat-{path.stem}", ("--chat-template", str(path)))
        try:
            server.wait_serving()
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1",
                                   api_key="x", max_retries=0)
            messages = random_messages(rng, odd=False)
            prompt, error = render_reference(path.read_text(), {
                "messages": messages, "add_generation_prompt": True, "bos_token": "",
                "eos_token": "", "tools": None})
            assert error is None, error
            check_same_as_completions(client, "demo", messages, prompt, 8, rng.randrange(1000))
        finally:
            assert server.stop() == 0, server.log()

    # A template that raises: 400 with its message.
    server = Sinkserve(binary, work, "chat-inst", ("--chat-template", str(TEMPLATES / "inst.jinja")))
    try:
        server.wait_serving()
        check_error(server, {"messages": [{"role": "user", "content": "a"},
                                          {"role": "user", "content": "b"}]},
                    "messages", "Conversation roles must alternate user/assistant/user/assistant/...")
        status, answer = post(server.http_port, "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "a"}], "max_tokens": 3})
        assert status == 200 and answer["choices"][0]["message"]["role"] == "assistant", answer
    finally:
        assert server.stop() == 0, server.log()

    # No template: 400 naming messages, as before.
    server = Sinkserve(binary, work, "chat-none")
    try:
        server.wait_serving()
        check_error(server, {"messages": [{"role": "user", "content": "hi"}]}, "messages",
                    "no chat template")
    finally:
        assert server.stop() == 0, server.log()

    # A template outside the subset stops the server at start, naming file and line.
    bad = work / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m.content | wordwrap(3) }}\n{% endfor %}\n")
    server = Sinkserve(binary, work, "chat-bad", ("--chat-template", str(bad)))
    code = server.popen.wait(60)
    assert code == 1 and f"{bad}:2" in server.log() and "wordwrap" in server.log(), server.log()


def check_model_directory(binary: str, work: Path, rng: random.Random) -> None:
    """A checkpoint directory (the fixture Pythia, vocab 512, with a byte-level tokenizer.json
    of 256 tokens) whose tokenizer_config.json holds the template: found without the flag."""
    model = work / "model"
    shutil.rmtree(model, ignore_errors=True)
    model.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (model / name).symlink_to(FIXTURE_MODEL / name)
    # GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the others
    # for code points from 256 on, in byte order.
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    others = [b for b in range(256) if b not in printable]
    alphabet = {b: chr(b) if b in printable else chr(256 + others.index(b)) for b in range(256)}
    (model / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                            "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {alphabet[b]: b for b in range(256)}, "merges": []}}))
    # The [INST] template (it uses bos_token and eos_token) in HF's tokenizer_config.json.
    inst = (TEMPLATES / "inst.jinja").read_text()
    (model / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<B>", "lstrip": False}, "eos_token": "<E>",
        "chat_template": inst, "model_max_length": 128}))

    def serve_and_compare(template_source: str, server_id: str) -> None:
        server = Sinkserve(binary, work, server_id, ("--model", str(model), "--dense"))
        try:
            server.wait_serving(120)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1",
                                   api_key="x", max_retries=0)
            messages = [{"role": "system", "content": random_text(rng, 6)},
                        {"role": "user", "content": random_text(rng, 6)}]
            prompt, error = render_reference(template_source, {
                "messages": messages, "add_generation_prompt": True, "bos_token": "<B>",
                "eos_token": "<E>"})
            assert error is None, error
            check_same_as_completions(client, model.name, messages, prompt, 8, rng.randrange(1000))
        finally:
            assert server.stop() == 0, server.log()

    # `sinkserve chat-template` finds it too, with the config's special tokens, and takes the
    # config itself as --chat-template.
    variables = {"messages": [{"role": "system", "content": random_text(rng)},
                              {"role": "user", "content": random_text(rng)}]}
    (work / "dir-messages.json").write_text(json.dumps(variables))
    want, error = render_reference(inst, {**variables, "add_generation_prompt": True,
                                          "bos_token": "<B>", "eos_token": "<E>"})
    assert error is None, error
    for flags in (("--model", str(model)),
                  ("--chat-template", str(model / "tokenizer_config.json"))):
        ours = subprocess.run([binary, "chat-template", *flags, "--messages",
                               str(work / "dir-messages.json")], capture_output=True)
        assert ours.returncode == 0 and ours.stdout == want.encode(), (flags, ours, want)
    serve_and_compare(inst, "chat-dir")
    # chat_template.jinja, when present, is the template.
    chatml = (TEMPLATES / "chatml.jinja").read_text()
    (model / "chat_template.jinja").write_text(chatml)
    serve_and_compare(chatml, "chat-dir-jinja")
    print("model directory: tokenizer_config.json and chat_template.jinja found without the flag")


def main() -> None:
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    seed = int(os.environ.get("CHAT_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    check_interpreter(binary, work, rng)
    check_demo_server(binary, work, rng)
    check_model_directory(binary, work, rng)
    print("chat ok")


if __name__ == "__main__":
    main()
