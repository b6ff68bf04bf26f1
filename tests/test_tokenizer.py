#!/usr/bin/python3
"""`acem tokenize` (eval/bpe.c) against an independent transcription of GPT-2's published
encoder (tests/oracle/gpt2_encoder.py, python3-regex), line by line, on more than 1 MB of
real text with non-ASCII that Debian ships on this machine.

Text: the translated man pages under /usr/share/man/{ja,ru,ko,de,fr} (from the packages
passwd, login, man-db, psmisc, procps, xz-utils, dpkg-dev, apt, ...), decompressed, in
sorted path order, one file of each language in turn, the files that are UTF-8, until 1.2 MB; Debian changelogs
(/usr/share/doc/*/changelog.Debian.gz) fill up if those are fewer.

Vocabularies: (1) one trained on the first 150 kB of that text by the standard BPE
procedure (gpt2_encoder.train: most frequent pair, ties to the smaller pair, 2,000 merges),
its ids shuffled by a seeded RNG so that nothing can depend on their order, with
<|endoftext|>; (2) a byte-only one (256 tokens, no merges). Both as vocab.json + merges.txt
and as tokenizer.json. Then added tokens, odd merge orders, add_prefix_space, the input's
edge cases (empty lines, CR, NUL, no final newline, standard input), invalid UTF-8 and
hostile tokenizer files.

Usage: /usr/bin/python3 tests/test_tokenizer.py PATH/TO/acem"""

import glob
import gzip
import itertools
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import gpt2_encoder as G  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

TARGET = 1_200_000
EOT = "<|endoftext|>"


def corpus():
    per_lang = [sorted(glob.glob(f"/usr/share/man/{lang}/man*/*.gz"))
                for lang in ("ja", "ru", "ko", "de", "fr")]
    files = [f for row in itertools.zip_longest(*per_lang) for f in row if f]
    files += sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz"))
    parts, size = [], 0
    for f in files:
        try:
            text = gzip.open(f).read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text.encode())
        if size >= TARGET:
            break
    return "".join(parts)


TEXT = corpus()
MERGES = G.train(TEXT[:150_000], 2000)


def vocab_of(merges, extra=(EOT,), seed=1):
    tokens = list(dict.fromkeys([G.BYTE_ENCODER[b] for b in range(256)] +
                                [a + b for a, b in merges] + list(extra)))
    ids = list(range(len(tokens)))
    random.Random(seed).shuffle(ids)
    return dict(zip(tokens, ids))


def write_files(d, vocab, merges, config=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    if config is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
    return d


def tokenizer_json(vocab, merges, added=(), pairs=False, prefix=False, **model):
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": vocab[a] if a in vocab else i, "content": a,
                              "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": True, "special": True} for a, i in added],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": prefix,
                              "trim_offsets": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": False},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "vocab": vocab,
                      "merges": [[a, b] if pairs else f"{a} {b}" for a, b in merges], **model}}


def write_json(d, obj, raw=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "wb") as f:
        f.write(raw if raw is not None else json.dumps(obj, ensure_ascii=False).encode())
    return d


def lines_of(text):
    """The CLI's lines: split at "\\n" only; a final newline ends the last line."""
    ls = text.split("\n")
    return ls[:-1] if text.endswith("\n") else ls


def compare(d, name, model_dir, text, enc, stdin=False):
    """acem tokenize on text against enc.encode per line; returns (seconds, tokens)."""
    path = os.path.join(d, name + ".txt")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8", "surrogatepass"))
    t0 = time.time()
    if stdin:
        with open(path, "rb") as f:
            r = run("tokenize", "--model", model_dir, stdin=f)
    else:
        r = run("tokenize", "--model", model_dir, "--file", path)
    secs = time.time() - t0
    want = [" ".join(map(str, enc.encode(ln))) for ln in lines_of(text)]
    got = r.stdout.split("\n")[:-1] if r.stdout.endswith("\n") else r.stdout.split("\n")
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    check(f"{name}: {len(want)} lines, ids identical to the encoder.py transcription",
          r.returncode == 0 and len(got) == len(want) and first is None,
          f"rc {r.returncode} {r.stderr} lines {len(got)}/{len(want)} first diff line {first}: "
          f"{lines_of(text)[first]!r} got {got[first]} want {want[first]}" if first is not None
          else f"rc {r.returncode} {r.stderr} lines {len(got)}/{len(want)}")
    return secs, sum(len(w.split()) for w in want)


def group_real_text(d):
    n_bytes = len(TEXT.encode())
    non_ascii = sum(1 for c in TEXT if ord(c) > 127)
    print(f"  text: {n_bytes} bytes, {non_ascii} non-ASCII characters, "
          f"{len(lines_of(TEXT))} lines; {len(MERGES)} merges trained")
    check("the text is over 1 MB with non-ASCII", n_bytes >= 1_000_000 and non_ascii > 100_000,
          (n_bytes, non_ascii))
    vocab = vocab_of(MERGES)
    enc = G.Encoder(vocab, MERGES, added=[EOT])
    files = write_files(os.path.join(d, "files"), vocab, MERGES)
    tj = write_json(os.path.join(d, "json"), tokenizer_json(vocab, MERGES, [(EOT, 0)]))
    tjp = write_json(os.path.join(d, "pairs"), tokenizer_json(vocab, MERGES, [(EOT, 0)], pairs=True))
    for label, m in (("vocab.json+merges.txt", files), ("tokenizer.json", tj),
                     ("tokenizer.json, merges as pairs", tjp)):
        secs, n = compare(d, label.replace(" ", "_").replace(",", ""), m, TEXT, enc)
        print(f"  {label}: {n} tokens in {secs:.2f} s ({n_bytes / secs / 1e6:.1f} MB/s with start-up)")
    byte_vocab = vocab_of([], extra=(EOT,), seed=2)
    benc = G.Encoder(byte_vocab, [], added=[EOT])
    compare(d, "byte-only_files", write_files(os.path.join(d, "bfiles"), byte_vocab, []), TEXT, benc)
    compare(d, "byte-only_json", write_json(os.path.join(d, "bjson"),
                                            tokenizer_json(byte_vocab, [], [(EOT, 0)])), TEXT, benc)


def group_added_tokens(d):
    """<|endoftext|> inside words and lines, repeated, at the ends; an added token missing
    from the vocabulary; two that overlap (the longer wins where both start)."""
    vocab = vocab_of(MERGES)
    added = [(EOT, 0), ("<|end", len(vocab) + 5), ("ツ<pad>", len(vocab) + 9)]
    full = dict(vocab, **{"<|end": len(vocab) + 5, "ツ<pad>": len(vocab) + 9})
    enc = G.Encoder(full, MERGES, added=[a for a, _ in added])
    text = ("Hello<|endoftext|>world\n<|endoftext|><|endoftext|>\n  <|end of it <|endoftext|> \n"
            "xツ<pad>y<|endoftextz\n<|endoftext|>\nline " + EOT + "\n" + TEXT[5000:9000])
    compare(d, "added_tokens_json", write_json(os.path.join(d, "j"),
                                               tokenizer_json(vocab, MERGES, added)), text, enc)
    eot_only = G.Encoder(vocab, MERGES, added=[EOT])
    files = write_files(os.path.join(d, "f"), vocab, MERGES)
    compare(d, "vocab.json+merges.txt: <|endoftext|> by default", files, text, eot_only)
    cfg = {"added_tokens_decoder": {str(vocab[EOT]): {"content": EOT, "special": True},
                                    str(len(vocab) + 9): {"content": "ツ<pad>", "lstrip": False}}}
    vocab_pad = dict(vocab, **{"ツ<pad>": len(vocab) + 9})
    files2 = write_files(os.path.join(d, "f2"), vocab_pad, MERGES, config=cfg)
    compare(d, "tokenizer_config.json's added_tokens_decoder", files2, text,
            G.Encoder(vocab_pad, MERGES, added=[EOT, "ツ<pad>"]))


def group_merge_orders(d):
    """Merges in orders training never makes (a merge of a made token ranked before the merge
    that makes it): encoder.py's pass semantics, not one-merge-at-a-time."""
    text = TEXT[:60000] + "\naaaaaaaaaaaa abababababa aaabaaab\n"
    extra = [("a", "a"), ("aa", "a"), ("aaa", "b"), ("a", "b"), ("ab", "a"), ("b", "a"),
             ("ab", "ab")]
    for seed in range(3):
        merges = list(dict.fromkeys(MERGES[:600] + extra))
        random.Random(seed).shuffle(merges)
        vocab = vocab_of(merges, seed=seed)
        compare(d, f"shuffled_merges_{seed}", write_json(os.path.join(d, f"s{seed}"),
                                                         tokenizer_json(vocab, merges)),
                text, G.Encoder(vocab, merges))


def group_options(d):
    vocab = vocab_of(MERGES)
    text = "Hello world\n world\n\nx<|endoftext|>y\n" + TEXT[20000:30000]
    compare(d, "add_prefix_space", write_json(os.path.join(d, "p"), tokenizer_json(
        vocab, MERGES, [(EOT, 0)], prefix=True)), text,
        G.Encoder(vocab, MERGES, added=[EOT], add_prefix_space=True))
    # ignore_merges (Llama 3's tokenizer.json): a word in the vocabulary is its own token
    word = "".join(G.BYTE_ENCODER[b] for b in " zzqx".encode())
    v2 = dict(vocab, **{word: len(vocab) + 3})
    r = run("tokenize", "--model", write_json(os.path.join(d, "im"), tokenizer_json(
        v2, MERGES, ignore_merges=True)), input=" zzqx zzq\n")
    plain = G.Encoder(v2, MERGES)
    check("ignore_merges: a word in the vocabulary is one token",
          r.stdout == f"{len(vocab) + 3} {' '.join(map(str, plain.encode(' zzq')))}\n", r.stdout)


def group_input_edges(d):
    vocab = vocab_of(MERGES)
    m = write_files(os.path.join(d, "f"), vocab, MERGES)
    enc = G.Encoder(vocab, MERGES, added=[EOT])
    compare(d, "edges", m, "\n\nfirst\r\n  two  spaces \t\n\x00nul\x00 inside\nno final newline",
            enc)
    compare(d, "standard_input", m, TEXT[:20000], enc, stdin=True)
    r = run("tokenize", "--model", m, input="")
    check("empty input: no output", r.returncode == 0 and r.stdout == "", r)
    # one word of 200 kB (no pre-tokenisation boundary): the merge loop is O(n log n)
    long_word = "".join(random.Random(3).choice("abcdefghij") for _ in range(200_000))
    compare(d, "a 6 kB word, 3,000 é", m, long_word[:6000] + "\n" + "é" * 3000, enc)
    path = os.path.join(d, "long.txt")
    with open(path, "w") as f:
        f.write(long_word + "\n")
    t0 = time.time()
    r = run("tokenize", "--model", m, "--file", path)
    secs = time.time() - t0
    check(f"a 200 kB word tokenises in {secs:.2f} s (< 10 s)", r.returncode == 0 and secs < 10, r.stderr)
    # invalid UTF-8: the line and the byte are named, lines before it printed
    bad = os.path.join(d, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"ok\nfine\nab\xc3(\n" + b"never\n")
    r = run("tokenize", "--model", m, "--file", bad)
    check("invalid UTF-8: one error line naming file:line and the byte",
          one_error_line(r, f"{bad}:3", "not valid UTF-8 at byte 2") and
          r.stdout.count("\n") == 2, (r.stdout, r.stderr))
    for label, data in (("surrogate", b"\xed\xa0\x80"), ("overlong", b"\xc0\xaf"),
                        ("beyond U+10FFFF", b"\xf4\x90\x80\x80"), ("truncated", b"x\xe2\x82")):
        with open(bad, "wb") as f:
            f.write(data + b"\n")
        r = run("tokenize", "--model", m, "--file", bad)
        check(f"invalid UTF-8 ({label}) refused", one_error_line(r, f"{bad}:1", "not valid UTF-8"),
              r.stderr)


def group_cli_usage(d):
    r = run("tokenize", "--help")
    check("tokenize --help", r.returncode == 0 and "--model DIR" in r.stdout, r)
    r = run("--help")
    check("acem --help lists tokenize", "tokenize" in r.stdout, r.stdout)
    check("bare tokenize: usage, exit 2", run("tokenize").returncode == 2)
    check("no --model: usage error", one_error_line(run("tokenize", "--file", "x"), "--model"))
    check("unknown option", one_error_line(run("tokenize", "--bogus"), "--bogus"))
    m = write_files(os.path.join(d, "f"), vocab_of([]), [])
    check("missing --file", one_error_line(run("tokenize", "-m", m, "-f", os.path.join(d, "none")),
                                           "none", "cannot open"))
    check("an empty directory", one_error_line(run("tokenize", "-m", d + "/f/.."), "no tokenizer.json"))


def group_hostile(d):
    """Each broken directory: exit 1, one error line naming the file and the problem."""
    vocab = vocab_of(MERGES[:50])
    merges = MERGES[:50]
    tj = tokenizer_json(vocab, merges, [(EOT, 0)])
    no_byte = {k: v for k, v in vocab.items() if k != G.BYTE_ENCODER[0]}

    def variant(**kw):
        o = json.loads(json.dumps(tj))
        for k, v in kw.items():
            if k.startswith("model_"):
                o["model"][k[6:]] = v
            else:
                o[k] = v
        return o

    a, b = merges[3]
    cases = [
        ("not JSON", None, b"{\"model\": ", "tokenizer.json", "not valid JSON"),
        ("not UTF-8", None, b"{\"a\": \"\xff\"}", "tokenizer.json", "not valid UTF-8"),
        ("trailing bytes", None, json.dumps(tj).encode() + b" x", "tokenizer.json", "one JSON object"),
        ("an array", None, b"[]", "tokenizer.json", "one JSON object"),
        ("model not BPE", variant(model_type="WordPiece"), None, "tokenizer.json", "BPE"),
        ("normalizer", variant(normalizer={"type": "NFC"}), None, "tokenizer.json", "normalizer"),
        ("pre-tokenizer", variant(pre_tokenizer={"type": "Whitespace"}), None, "tokenizer.json",
         "ByteLevel"),
        ("no pre-tokenizer", variant(pre_tokenizer=None), None, "tokenizer.json", "ByteLevel"),
        ("template post-processor", variant(post_processor={"type": "TemplateProcessing"}), None,
         "tokenizer.json", "post_processor"),
        ("dropout", variant(model_dropout=0.1), None, "tokenizer.json", "dropout"),
        ("subword prefix", variant(model_continuing_subword_prefix="##"), None, "tokenizer.json",
         "continuing_subword_prefix"),
        ("byte_fallback", variant(model_byte_fallback=True), None, "tokenizer.json", "byte_fallback"),
        ("vocab not an object", variant(model_vocab=[1]), None, "tokenizer.json", "vocabulary"),
        ("negative id", variant(model_vocab=dict(vocab, x=-1)), None, "tokenizer.json", "\"x\""),
        ("fractional id", variant(model_vocab=dict(vocab, x=1.5)), None, "tokenizer.json", "\"x\""),
        ("string id", variant(model_vocab=dict(vocab, x="7")), None, "tokenizer.json", "\"x\""),
        ("repeated id", variant(model_vocab=dict(vocab, x=vocab[a])), None, "tokenizer.json",
         f"id {vocab[a]} is given to two tokens"),
        ("repeated token", None, json.dumps(tj).replace('"vocab": {', '"vocab": {"!": 9999, ', 1).encode(),
         "tokenizer.json", "appears twice"),
        ("a byte missing", variant(model_vocab=no_byte, model_merges=[]), None, "tokenizer.json",
         "byte 0x00"),
        ("merge of unknown token", variant(model_merges=["q zzz"]), None, "tokenizer.json",
         "\"zzz\" is not in the vocabulary"),
        ("merge result not in vocab", variant(model_merges=["q z"]), None, "tokenizer.json",
         "\"qz\" is not in the vocabulary"),
        ("merge repeated", variant(model_merges=[f"{a} {b}", f"{a} {b}"]), None, "tokenizer.json",
         "model.merges[1]"),
        ("merge with two spaces", variant(model_merges=[f"{a}  {b}"]), None, "tokenizer.json",
         "one space"),
        ("merge triple", variant(model_merges=[[a, b, a]]), None, "tokenizer.json", "pair"),
        ("merges not an array", variant(model_merges={}), None, "tokenizer.json", "model.merges"),
        ("added lstrip", variant(added_tokens=[{"id": 5, "content": "<x>", "lstrip": True}]), None,
         "tokenizer.json", "lstrip"),
        ("added empty", variant(added_tokens=[{"id": 5, "content": ""}]), None, "tokenizer.json",
         "added_tokens[0]"),
        ("added id clash", variant(added_tokens=[{"id": vocab[a], "content": EOT}]), None,
         "tokenizer.json", "the vocabulary's is"),
        ("added twice", variant(added_tokens=[{"id": 99990, "content": "<y>"},
                                              {"id": 99991, "content": "<y>"}]), None,
         "tokenizer.json", "repeats"),
    ]
    for i, (label, obj, raw, fname, phrase) in enumerate(cases):
        m = write_json(os.path.join(d, f"c{i}"), obj, raw)
        r = run("tokenize", "--model", m, input="x\n")
        check(f"hostile tokenizer.json ({label})",
              one_error_line(r, os.path.join(m, fname), phrase) and r.stdout == "", r.stderr)
    # vocab.json + merges.txt
    ok_vocab = json.dumps(vocab)
    file_cases = [
        ("merges.txt empty line", ok_vocab, "#version: 0.2\n\nq z\n", "merges.txt:2", "one space"),
        ("merges.txt unknown", ok_vocab, "#version: 0.2\nq zzz\n", "merges.txt:2", "zzz"),
        ("merges.txt not UTF-8", ok_vocab, b"\xff\n", "merges.txt", "not valid UTF-8"),
        ("vocab.json not an object", "[]", "", "vocab.json", "one JSON object"),
        ("vocab.json empty", "{}", "", "vocab.json", "non-empty"),
    ]
    for i, (label, v, mg, where, phrase) in enumerate(file_cases):
        m = os.path.join(d, f"f{i}")
        os.makedirs(m)
        with open(os.path.join(m, "vocab.json"), "w") as f:
            f.write(v)
        with open(os.path.join(m, "merges.txt"), "wb") as f:
            f.write(mg if isinstance(mg, bytes) else mg.encode())
        r = run("tokenize", "--model", m, input="x\n")
        check(f"hostile vocab.json+merges.txt ({label})",
              one_error_line(r, os.path.join(m, where), phrase), r.stderr)
    m = write_files(os.path.join(d, "cfg"), vocab, merges, config={"add_prefix_space": True})
    check("tokenizer_config.json's add_prefix_space refused", one_error_line(
        run("tokenize", "-m", m, input=""), "tokenizer_config.json", "add_prefix_space"))
    m = write_files(os.path.join(d, "cfg2"), vocab, merges,
                    config={"added_tokens_decoder": {"x1": {"content": "<q>"}}})
    check("tokenizer_config.json: a key that is not an id", one_error_line(
        run("tokenize", "-m", m, input=""), "tokenizer_config.json", "x1", "not an id"))
    m = os.path.join(d, "nomerges")
    os.makedirs(m)
    with open(os.path.join(m, "merges.txt"), "w") as f:
        f.write("")
    check("merges.txt without vocab.json", one_error_line(
        run("tokenize", "-m", m, input=""), "vocab.json", "cannot open"))


if __name__ == "__main__":
    only = sys.argv[2:]
    sys.exit(run_groups([group_real_text, group_added_tokens, group_merge_orders, group_options,
                         group_input_edges, group_cli_usage, group_hostile], "acem-tok-", only))
