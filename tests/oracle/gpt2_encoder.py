"""An independent Python transcription of OpenAI's GPT-2 encoder (openai/gpt-2
src/encoder.py: bytes_to_unicode, get_pairs, Encoder.bpe, Encoder.encode) with the `regex`
module (Debian's python3-regex), plus what the Hugging Face files add around it: added
tokens cut out of the text first (leftmost, longest at a position) and ByteLevel's
add_prefix_space per stretch between them. And the standard BPE training, to make a
vocabulary with merges for the tests.

Written from the published source and the tokenizers documentation, not from acem."""

import heapq
from collections import Counter

import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def get_pairs(word):
    pairs = set()
    prev = word[0]
    for char in word[1:]:
        pairs.add((prev, char))
        prev = char
    return pairs


class Encoder:
    def __init__(self, encoder, bpe_merges, added=(), add_prefix_space=False):
        self.encoder = encoder
        self.bpe_ranks = dict(zip(bpe_merges, range(len(bpe_merges))))
        self.cache = {}
        self.added = sorted(added, key=len, reverse=True)  # longest first at a position
        self.add_prefix_space = add_prefix_space

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode_plain(self, text):
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
        bpe_tokens = []
        for token in regex.findall(PATTERN, text):
            token = "".join(BYTE_ENCODER[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(" "))
        return bpe_tokens

    def encode(self, text):
        """Added tokens first: the leftmost occurrence of any, the longest one there."""
        ids = []
        while self.added:
            hits = [(text.find(a), -len(a), a) for a in self.added if a in text]
            if not hits:
                break
            at, _, a = min(hits)
            if at:
                ids += self.encode_plain(text[:at])
            ids.append(self.encoder[a])
            text = text[at + len(a):]
        return ids + (self.encode_plain(text) if text else [])


def train(text, n_merges):
    """Standard BPE training (Sennrich et al.; Hugging Face's BpeTrainer without a minimum
    frequency): the words are the pattern's matches in byte_encoder form, counted; then,
    n_merges times, the most frequent adjacent pair over all words (ties: the smaller pair
    in code point order) is merged everywhere and becomes a merge and a token. Counts are
    kept per pair and updated from the words that change; a lazy heap finds the best."""
    words = Counter("".join(BYTE_ENCODER[b] for b in t.encode("utf-8"))
                    for t in regex.findall(PATTERN, text))
    syms = [list(w) for w in words]
    freq = list(words.values())
    counts, where = Counter(), {}
    for i, w in enumerate(syms):
        for p in zip(w, w[1:]):
            counts[p] += freq[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        c, p = heapq.heappop(heap)
        if counts.get(p, 0) != -c or c == 0:
            continue
        merges.append(p)
        new = p[0] + p[1]
        touched = set()
        for i in where.pop(p, ()):
            w = syms[i]
            for q in zip(w, w[1:]):
                counts[q] -= freq[i]
                touched.add(q)
            out, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and (w[k], w[k + 1]) == p:
                    out.append(new)
                    k += 2
                else:
                    out.append(w[k])
                    k += 1
            syms[i] = out
            for q in zip(out, out[1:]):
                counts[q] += freq[i]
                where.setdefault(q, set()).add(i)
                touched.add(q)
        for q in touched:
            if counts[q] > 0:
                heapq.heappush(heap, (-counts[q], q))
    return merges
