"""Small saved models for the server tests (tests/test_serve_*.py): a Keras CNN, a
GaussianHMM, a CategoricalHMM, an HMMClassifier, a Word2Vec and a char-level TransformerLM,
each built in a second or less, deterministic, written with the formats' own ``save``."""
import numpy as np

TEXT = ("first citizen: before we proceed any further, hear me speak. all: speak, speak. "
        "first citizen: you are all resolved rather to die than to famish? all: resolved. resolved. ") * 4


def keras_cnn():
    from pyaiml.keras import layers as L
    from pyaiml.keras.models import Sequential

    rs = np.random.default_rng(0)
    m = Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), L.MaxPooling2D(2), L.Flatten(),
                    L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rs.standard_normal((32, 8, 8, 1)).astype(np.float32)
    m.fit(x, rs.integers(0, 3, 32), epochs=1, batch_size=16, verbose=0)
    return m


def gaussian_hmm():
    from pyaiml.hmm import GaussianHMM

    rs = np.random.default_rng(1)
    X = np.concatenate([rs.normal(0, 1, (40, 2)), rs.normal(4, 1, (40, 2))])
    return GaussianHMM(2, n_iter=5, random_state=0).fit(X, [40, 40])


def categorical_hmm():
    from pyaiml.hmm import CategoricalHMM

    rs = np.random.default_rng(2)
    return CategoricalHMM(2, n_iter=5, random_state=0).fit(rs.integers(0, 4, (60, 1)))


def hmm_classifier():
    from pyaiml.hmm import HMMClassifier

    rs = np.random.default_rng(3)
    X = [rs.normal(c * 3, 1, (12 + i, 3)) for c in range(2) for i in range(4)]
    y = np.array(["low"] * 4 + ["high"] * 4)
    return HMMClassifier(n_states=2, n_iter=3, n_jobs=1).fit(X, y)


def word2vec():
    from pyaiml.models import Word2Vec
    from pyaiml.text.tokenize import simple_tokenize

    sents = [simple_tokenize(s) for s in TEXT.split(".") if s.strip()]
    return Word2Vec(sents, vector_size=16, window=3, min_count=1, workers=1, seed=0, epochs=3)


def transformer_lm(context=48, specials=()):
    from pyaiml.keras._common import seed
    from pyaiml.seq import TransformerLM
    from pyaiml.seq.tokenizer import CharTokenizer

    seed(4)  # deterministic weights
    tok = CharTokenizer.from_text(TEXT, specials=list(specials))
    return TransformerLM(context=context, width=32, num_layers=2, num_heads=4, tokenizer=tok)


def save_all(d):
    """Write every model under directory ``d``; {name: path}."""
    paths = {"cnn": d / "cnn.keras", "ghmm": d / "ghmm.npz", "chmm": d / "chmm.npz", "clf": d / "clf.npz",
             "w2v": d / "w2v.npz", "lm": d / "lm.npz"}
    keras_cnn().save(paths["cnn"])
    gaussian_hmm().save(paths["ghmm"])
    categorical_hmm().save(paths["chmm"])
    hmm_classifier().save(paths["clf"])
    word2vec().save(str(paths["w2v"]))
    transformer_lm().save(paths["lm"])
    return {k: str(v) for k, v in paths.items()}
