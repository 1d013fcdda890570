#!/usr/bin/env python3
"""scripts/fetch-data.sh --from: the preparation of the raw downloads, on raw files made here
from the evaluation data the way upstream publishes them (this machine cannot download):
WikiText's blank " " lines and a zip, Gutenberg's BOM, CRLF, trailing spaces and licence
header/footer, the 20B tokenizer's four extra added tokens in another JSON layout. The
prepared files must match data/SHA256SUMS; one changed byte must fail and write nothing.

    fetch_data_test.py   (reads $SINKSERVE_DATA_DIR, else the repo's data/)
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("SINKSERVE_DATA_DIR") or os.path.join(REPO, "data")
FETCH = os.path.join(REPO, "scripts", "fetch-data.sh")
rng = random.Random(int(os.environ.get("SINKSERVE_TEST_SEED", random.randrange(1 << 32))))


def read(relative):
    path = os.path.join(DATA, relative)
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: run scripts/fetch-data.sh, or set SINKSERVE_DATA_DIR")
    with open(path, encoding="utf-8") as file:
        return file.read()


def raw_wikitext(prepared):
    lines = []
    for line in prepared.splitlines(keepends=True):
        lines.extend([" \n"] * rng.randrange(3))  # the blank lines upstream has
        lines.append(line)
    return "".join(lines) + " \n"


def raw_gutenberg(prepared, title):
    body = "".join(line.rstrip("\n") + " " * rng.randrange(2) + "\r\n"
                   for line in prepared.splitlines(keepends=True))
    return ("\ufeffThe Project Gutenberg eBook of " + title + "\r\n\r\nThis eBook is for the use "
            "of anyone anywhere.\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK " +
            title.upper() + " ***\r\n\r\n\r\n" + body + "\r\n\r\n\r\n*** END OF THE PROJECT "
            "GUTENBERG EBOOK " + title.upper() + " ***\r\n\r\nSection 1. General Terms of Use\r\n")


def raw_tokenizer(prepared):
    config = json.loads(prepared)
    for i, content in enumerate(["<|a|>", "<|b|>", "<|c|>", "<|d|>"]):
        config["added_tokens"].append({"id": 50277 + i, "special": True, "content": content,
                                       "single_word": False, "lstrip": False, "rstrip": False,
                                       "normalized": False})
    return json.dumps(config)  # compact and ASCII-escaped: another layout than the prepared one


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write(text)


def fetch_from(raw, dest):
    return subprocess.run([FETCH, "--from", raw, "--dest", dest], capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        raw, dest = os.path.join(tmp, "raw"), os.path.join(tmp, "dest")
        os.makedirs(raw)
        write(os.path.join(raw, "20B_tokenizer.json"),
              raw_tokenizer(read("tokenizer/tokenizer.json")))
        with zipfile.ZipFile(os.path.join(raw, "wikitext-2-raw-v1.zip"), "w") as archive:
            archive.writestr("wikitext-2-raw/wiki.test.raw",
                             raw_wikitext(read("wikitext-2-raw/wiki.test.raw")))
        write(os.path.join(raw, "pg2701.txt"),
              raw_gutenberg(read("books/moby-dick.txt"), "Moby Dick; Or, The Whale"))
        write(os.path.join(raw, "pg16.txt"), raw_gutenberg(read("books/peter-pan.txt"), "Peter Pan"))

        done = fetch_from(raw, dest)
        assert done.returncode == 0, done.stderr
        for relative in ["tokenizer/tokenizer.json", "wikitext-2-raw/wiki.test.raw",
                         "books/moby-dick.txt", "books/peter-pan.txt"]:
            with open(os.path.join(dest, relative), "rb") as made, \
                 open(os.path.join(DATA, relative), "rb") as expected:
                assert made.read() == expected.read(), relative

        # One changed word: the sha256 check fails, names the file, and writes nothing.
        book = raw_gutenberg(read("books/peter-pan.txt"), "Peter Pan").replace("Wendy", "Windy", 1)
        write(os.path.join(raw, "pg16.txt"), book)
        other = os.path.join(tmp, "other")
        failed = fetch_from(raw, other)
        assert failed.returncode != 0, failed.stderr
        assert "books/peter-pan.txt" in failed.stdout + failed.stderr, failed.stdout + failed.stderr
        assert not os.path.exists(other), os.listdir(other)
    print("fetch_data_test: prepared files match data/SHA256SUMS; a changed byte is refused")


if __name__ == "__main__":
    main()
