#!/usr/bin/env python3
"""Turns the raw downloads of scripts/fetch-data.sh into the evaluation data files that
data/SHA256SUMS lists (standard library only).

    prepare_data.py RAW_DIR OUT_DIR

RAW_DIR holds the files as published (names: OUTPUTS below); OUT_DIR receives
tokenizer/tokenizer.json, wikitext-2-raw/wiki.test.raw and books/{moby-dick,peter-pan}.txt.
"""
import json
import os
import re
import sys
import zipfile

# The last id of Pythia's tokenizer: 50254 BPE tokens + 23 whitespace tokens (50254-50276).
# Public copies of 20B_tokenizer.json may carry further added tokens, which Pythia lacks.
LAST_PYTHIA_ID = 50276


def tokenizer(raw_path):
    """The GPT-NeoX-20B tokenizer without added tokens past LAST_PYTHIA_ID, written as Hugging
    Face tokenizers pretty-prints it (2-space indent, UTF-8 unescaped, no final newline)."""
    with open(raw_path, encoding="utf-8") as file:
        config = json.load(file)
    config["added_tokens"] = [t for t in config["added_tokens"] if t["id"] <= LAST_PYTHIA_ID]
    vocab = config["model"]["vocab"]
    config["model"]["vocab"] = {k: v for k, v in vocab.items() if v <= LAST_PYTHIA_ID}
    return json.dumps(config, indent=2, ensure_ascii=False)


def wikitext_test(zip_path):
    """WikiText-2 raw test: its non-blank lines (as Hugging Face's loader keeps them), LF."""
    with zipfile.ZipFile(zip_path) as archive:
        raw = archive.read("wikitext-2-raw/wiki.test.raw").decode("utf-8")
    lines = raw.replace("\r\n", "\n").split("\n")
    return "".join(line + "\n" for line in lines if line.strip())


GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK[^\n]*$",
                             re.MULTILINE)
GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK", re.MULTILINE)


def gutenberg_book(raw_path):
    """A Project Gutenberg text between its START and END lines (the licence header and
    footer removed), LF, trailing spaces and the blank lines around it dropped."""
    with open(raw_path, encoding="utf-8-sig") as file:
        text = file.read().replace("\r\n", "\n")
    start = GUTENBERG_START.search(text)
    end = GUTENBERG_END.search(text, start.end() if start else 0)
    if not start or not end:
        sys.exit(f"prepare_data: {raw_path} lacks the Project Gutenberg START/END lines")
    body = "\n".join(line.rstrip() for line in text[start.end():end.start()].split("\n"))
    return body.strip("\n") + "\n"


# (file made, how, from which raw file)
OUTPUTS = [
    ("tokenizer/tokenizer.json", tokenizer, "20B_tokenizer.json"),
    ("wikitext-2-raw/wiki.test.raw", wikitext_test, "wikitext-2-raw-v1.zip"),
    ("books/moby-dick.txt", gutenberg_book, "pg2701.txt"),
    ("books/peter-pan.txt", gutenberg_book, "pg16.txt"),
]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    raw_dir, out_dir = sys.argv[1:]
    for relative, make, raw_name in OUTPUTS:
        raw_path = os.path.join(raw_dir, raw_name)
        if not os.path.isfile(raw_path):
            sys.exit(f"prepare_data: {raw_path} missing")
        path = os.path.join(out_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as file:
            file.write(make(raw_path))


if __name__ == "__main__":
    main()
