#!/usr/bin/env python3
"""Generates engine/tokenizer/unicode_data.cpp: the Unicode tables sinkserve's tokenizer needs, measured
from the reference implementation (Hugging Face `tokenizers`) rather than from a Unicode
Character Database.

Why measure instead of using utf8proc or the UCD: HF mixes Unicode versions. Its pre-tokenizer
regex runs on Oniguruma (Unicode 16 in tokenizers 0.23: letters such as U+1C89 count as \\p{L}),
while its NFC normalizer (the unicode-normalization-alignments crate) has much older tables (e.g.
U+07FD, added in Unicode 11, has no combining class there). No single library version
reproduces both, and the system's utf8proc (Unicode 15 on Debian 12) would silently change ids
whenever a distribution upgraded it. So every property below is read off HF's behaviour, code
point by code point, and the result is verified against HF before it is written.

Measured properties:
  * regex classes of the GPT-2 split pattern: \\p{L}, \\p{N}, \\s (Oniguruma);
  * \\w and \\s of the Rust `regex` crate, used by added tokens with single_word / lstrip / rstrip;
  * NFC: full canonical decompositions, the order of canonical combining classes (as ranks:
    only their order matters to the algorithm), and the canonical composition pairs.

Rerun (about two minutes):  pip install tokenizers==0.23.3 && python3 make_unicode_data.py
Then rebuild; tokenizer_test checks the tables against HF samples (unicode_samples.json).
"""
import argparse
import functools
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

# Flag bits, mirrored in engine/tokenizer/unicode.h (CharFlag).
FLAG_LETTER = 1       # Oniguruma \p{L}
FLAG_NUMBER = 2       # Oniguruma \p{N}
FLAG_SPACE = 4        # Oniguruma \s
FLAG_WORD = 8         # Rust regex \w
FLAG_RUST_SPACE = 16  # Rust regex \s


def code_points():
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def measure_regex_classes(cps):
    split = pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated")

    def one_piece(s):
        return len(split.pre_tokenize_str(s)) == 1

    flags = {}
    for c in cps:
        ch = chr(c)
        # A code point joins the run started by a known member of its class and by no other.
        letter, number = one_piece("a" + ch), one_piece("1" + ch)
        other, space = one_piece("!" + ch), one_piece("\t" + ch)
        if [letter, number, other, space].count(True) != 1:
            sys.exit(f"U+{c:04X}: ambiguous regex class {letter, number, other, space}")
        flags[c] = FLAG_LETTER * letter | FLAG_NUMBER * number | FLAG_SPACE * space
    return flags


def measure_rust_regex_classes(cps, flags, tokenizer_json):
    """\\w via a single_word added token, \\s via an lstrip one (added_vocabulary.rs)."""
    tok = Tokenizer.from_file(tokenizer_json)
    tok.add_tokens([AddedToken("<sw>", single_word=True, normalized=False),
                    AddedToken("<ls>", lstrip=True, normalized=False)])
    sw, ls = tok.token_to_id("<sw>"), tok.token_to_id("<ls>")
    batch = 1 << 15
    for start in range(0, len(cps), batch):
        chunk = cps[start:start + batch]
        before = tok.encode_batch([chr(c) + "<sw>" for c in chunk])
        after = tok.encode_batch(["<sw>" + chr(c) for c in chunk])
        stripped = tok.encode_batch([chr(c) + "<ls>" for c in chunk])
        for c, b, a, s in zip(chunk, before, after, stripped):
            word_before, word_after = sw not in b.ids, sw not in a.ids
            if word_before != word_after:
                sys.exit(f"U+{c:04X}: \\w differs before/after the token")
            flags[c] |= FLAG_WORD * word_before | FLAG_RUST_SPACE * (s.ids == [ls])


def measure_nfc(cps):
    nfd, nfc = normalizers.NFD(), normalizers.NFC()
    decompositions = {}
    for c in cps:
        d = nfd.normalize_str(chr(c))
        if d != chr(c) and not HANGUL_FIRST <= c <= HANGUL_LAST:
            decompositions[c] = [ord(x) for x in d]

    # Non-zero combining class: a mark swaps with U+0334 (ccc 1) or U+0345 (ccc 240, the largest).
    def swaps(a, b):  # ccc(a) > ccc(b) > 0
        return a != b and nfd.normalize_str(chr(a) + chr(b)) == chr(b) + chr(a)

    marks = [c for c in cps if c not in decompositions
             and (swaps(c, 0x0334) or swaps(0x0345, c) or c in (0x0334, 0x0345))]

    def compare(a, b):
        return 1 if swaps(a, b) else -1 if swaps(b, a) else 0

    marks.sort(key=functools.cmp_to_key(compare))
    ranks, rank = {}, 0
    for i, c in enumerate(marks):
        if i == 0 or compare(marks[i - 1], c) != 0:
            rank += 1
        ranks[c] = rank
    for a in marks:  # the ranks must reproduce every pairwise reordering HF does
        for b in marks:
            if swaps(a, b) != (ranks[a] > ranks[b]):
                sys.exit(f"combining class order is not a total order at U+{a:04X} U+{b:04X}")

    # Canonical compositions: every primary composite c (decomposes, and NFC gives it back) is
    # one pair (p, m) with NFD(p) + m == NFD(c) after reordering.
    def ccc(c):
        return ranks.get(c, 0)

    def reorder(seq):
        out = list(seq)
        for i in range(1, len(out)):
            j = i
            while j > 0 and ccc(out[j]) != 0 and ccc(out[j - 1]) > ccc(out[j]):
                out[j - 1], out[j] = out[j], out[j - 1]
                j -= 1
        return out

    full = dict(decompositions)
    by_full = {}
    for c in cps:
        by_full.setdefault(tuple(full.get(c, [c])), []).append(c)
    compositions = {}
    for c, d in decompositions.items():
        if nfc.normalize_str(chr(c)) != chr(c):
            continue  # excluded or singleton: never composed
        found = []
        for j in range(len(d)):
            rest = tuple(d[:j] + d[j + 1:])
            for p in by_full.get(rest, []):
                if nfc.normalize_str(chr(p)) == chr(p) and reorder(list(rest) + [d[j]]) == d:
                    found.append((p, d[j]))
        found = sorted(set(found))
        if len(found) > 1:
            # A decomposition mapping is (X, mark) with the mark last in canonical order, e.g.
            # U+01EC = U+01EA U+0304, not U+014C U+0328 (which only reorders to the same NFD).
            found = [(p, m) for p, m in found if m == d[-1]]
        if len(found) != 1:
            sys.exit(f"U+{c:04X}: {len(found)} candidate composition pairs {found}")
        compositions[found[0]] = c
    return decompositions, ranks, compositions


# ---------------------------------------------------------------------------------------------
# A reference NFC on the measured tables, checked against HF before anything is written.

def reference_nfc(text, decompositions, ranks, compositions):
    SBase, LBase, VBase, TBase, LCount, VCount, TCount = 0xAC00, 0x1100, 0x1161, 0x11A7, 19, 21, 28
    NCount = VCount * TCount
    out = []
    for ch in text:
        c = ord(ch)
        if SBase <= c < SBase + LCount * NCount:
            s = c - SBase
            out += [LBase + s // NCount, VBase + (s % NCount) // TCount]
            if s % TCount:
                out.append(TBase + s % TCount)
        else:
            out += decompositions.get(c, [c])
    for i in range(1, len(out)):
        j = i
        while j > 0 and ranks.get(out[j], 0) and ranks.get(out[j - 1], 0) > ranks.get(out[j], 0):
            out[j - 1], out[j] = out[j], out[j - 1]
            j -= 1
    result, starter, last_ccc = [], None, -1
    for c in out:
        cc = ranks.get(c, 0)
        if starter is not None and (last_ccc < cc or (last_ccc == 0 and len(result) - 1 == starter)):
            s, composed = result[starter], None
            if LBase <= s < LBase + LCount and VBase <= c < VBase + VCount:
                composed = SBase + ((s - LBase) * VCount + (c - VBase)) * TCount
            elif (SBase <= s < SBase + LCount * NCount and (s - SBase) % TCount == 0
                  and TBase < c < TBase + TCount):
                composed = s + (c - TBase)
            else:
                composed = compositions.get((s, c))
            if composed is not None:
                result[starter] = composed
                continue
        if cc == 0:
            starter = len(result)
        last_ccc = cc
        result.append(c)
    return "".join(map(chr, result))


def verify_nfc(cps, decompositions, ranks, compositions, samples):
    nfc, nfd = normalizers.NFC(), normalizers.NFD()
    texts = [chr(c) for c in cps] + [nfd.normalize_str(chr(c)) for c in decompositions]
    rng = random.Random(1)
    firsts = sorted({p for p, _ in compositions})
    seconds = sorted({m for _, m in compositions})
    alphabet = (firsts + seconds + list(ranks) + list(decompositions)[:4000] +
                [0x1100, 0x1112, 0x1161, 0x1175, 0x11A8, 0x11C2, 0xAC00, 0xAC01, 0xD7A3, 0x61, 0x20])
    for _ in range(samples):
        texts.append("".join(chr(rng.choice(alphabet)) for _ in range(rng.randint(1, 8))))
    for t in texts:
        want, got = nfc.normalize_str(t), reference_nfc(t, decompositions, ranks, compositions)
        if want != got:
            sys.exit(f"reference NFC disagrees with HF on {[hex(ord(x)) for x in t]}: "
                     f"{[hex(ord(x)) for x in want]} vs {[hex(ord(x)) for x in got]}")
    print(f"NFC tables verified on {len(texts)} strings", file=sys.stderr)


# ---------------------------------------------------------------------------------------------

def write_cpp(path, flags, decompositions, ranks, compositions):
    ranges = []  # (first, last, flags) for flags != 0
    for c in sorted(flags):
        f = flags[c]
        if not f:
            continue
        if ranges and ranges[-1][1] == c - 1 and ranges[-1][2] == f:
            ranges[-1][1] = c
        else:
            ranges.append([c, c, f])

    def rows(items):  # greedy fill to clang-format's 100 columns
        lines, line = [], "   "
        for item in items:
            if len(line) + 1 + len(item) > 100:
                lines.append(line)
                line = "   "
            line += " " + item
        lines.append(line)
        return "\n".join(lines)

    pool, decomp_rows = [], []
    for c in sorted(decompositions):
        d = decompositions[c]
        decomp_rows.append(f"{{0x{c:X}, {len(pool)}, {len(d)}}},")
        pool += d
    with open(path, "w") as out:
        out.write(f"""// GENERATED by scripts/gen/make_unicode_data.py from Hugging Face tokenizers
// {tokenizers.__version__}; do not edit. The tables are measured from HF's behaviour (see the
// script for why), and tokenizer_test checks them against HF samples.
#include "engine/tokenizer/unicode_data.h"

// clang-format off
namespace sinkserve::unicode_data {{

// Code point ranges with at least one CharFlag set; every other code point has none.
const CharFlagRange kCharFlagRanges[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}, {f}}}," for a, b, f in ranges])}
}};
const int kCharFlagRangeCount = {len(ranges)};

// Canonical combining classes as order-preserving ranks (0 = starter, the default).
const CodePointValue kCombiningRanks[] = {{
{rows([f"{{0x{c:X}, {ranks[c]}}}," for c in sorted(ranks)])}
}};
const int kCombiningRankCount = {len(ranks)};

// Full canonical decompositions (Hangul syllables are algorithmic and not listed):
// {{code point, offset into kDecompositionPool, length}}.
const Decomposition kDecompositions[] = {{
{rows(decomp_rows)}
}};
const int kDecompositionCount = {len(decomp_rows)};
const char32_t kDecompositionPool[] = {{
{rows([f"0x{c:X}," for c in pool])}
}};

// Canonical compositions {{first, second, composite}}, sorted by (first, second).
const Composition kCompositions[] = {{
{rows([f"{{0x{p:X}, 0x{m:X}, 0x{c:X}}}," for (p, m), c in sorted(compositions.items())])}
}};
const int kCompositionCount = {len(compositions)};

}}  // namespace sinkserve::unicode_data
// clang-format on
""")
    print(f"wrote {path}: {len(ranges)} flag ranges, {len(ranks)} combining marks, "
          f"{len(decomp_rows)} decompositions, {len(compositions)} compositions", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "engine", "tokenizer", "unicode_data.cpp"))
    parser.add_argument("--data-dir", default=os.environ.get("SINKSERVE_DATA_DIR") or
                        os.path.join(REPO, "data"))
    parser.add_argument("--samples", type=int, default=300000, help="random NFC check strings")
    args = parser.parse_args()
    cps = code_points()
    flags = measure_regex_classes(cps)
    measure_rust_regex_classes(cps, flags,
                               os.path.join(args.data_dir, "tokenizer", "tokenizer.json"))
    decompositions, ranks, compositions = measure_nfc(cps)
    verify_nfc(cps, decompositions, ranks, compositions, args.samples)
    write_cpp(args.out, flags, decompositions, ranks, compositions)


if __name__ == "__main__":
    main()
