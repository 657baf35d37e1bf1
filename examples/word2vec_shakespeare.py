"""Word embeddings on a real text: Word2Vec (skip-gram, negative sampling) on Tiny Shakespeare.

Each line of the play text is a sentence; plain strings are tokenised by pyaiml's simple
tokenizer (lower-case words). After training we look at neighbours of a few words, an
averaged phrase vector, and save the vectors in the word2vec text format that gensim and
word2vec.c read.

Run: python examples/word2vec_shakespeare.py [path/to/input.txt]
(default: the copy shipped with pyaiml, pyaiml.datasets.load_tiny_shakespeare()).
"""
import os
import sys
import time
import warnings

from pyaiml.datasets import load_tiny_shakespeare
from pyaiml.models import Word2Vec

text = load_tiny_shakespeare(sys.argv[1] if len(sys.argv) > 1 else None)
lines = [line for line in text.splitlines() if line.strip() and not line.rstrip().endswith(":")]  # no speaker tags

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # we pass plain strings on purpose: pyaiml tokenises them
    t0 = time.perf_counter()
    model = Word2Vec(lines, vector_size=100, window=5, min_count=3, sg=1, negative=5, epochs=10, workers=2, seed=1)
print(f"{len(model.wv)} words, trained in {time.perf_counter() - t0:.1f} s")

for word in ("king", "love", "rome", "death"):
    near = ", ".join(f"{w} ({s:.2f})" for w, s in model.wv.most_similar(word, topn=6))
    print(f"{word:>6}: {near}")
print("doesn't match:", model.wv.doesnt_match(["king", "queen", "duke", "sword"]))
print("'my lord' -> mean vector of 'my' and 'lord', first values:", model.wv["my lord"][:4])

out = os.path.join(os.getcwd(), "shakespeare_vectors.txt")
model.wv.save_word2vec_format(out)
print("vectors written to", out)
