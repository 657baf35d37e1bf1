// word2vec.h: one training epoch of Word2Vec (skip-gram or CBOW; negative sampling and/or
// hierarchical softmax) over a corpus that Python has already turned into integer arrays:
// word ids, sentence offsets, job boundaries, per-word subsampling thresholds, the noise
// distribution as an alias table, and the Huffman codes/points. Threads (one per worker)
// take jobs of about 10k words and update the shared matrices without locks (Hogwild).
// Every random draw comes from a per-job generator seeded from (seed, epoch, job), and the
// learning rate of a sentence depends only on its position in the corpus, so workers=1 is
// exactly repeatable and the random streams do not depend on the thread count.
//
// Not here: vocabulary, tokenising, tables (pyaiml/text/vocab.py builds them).
// Tests: tests/test_word2vec*.py (against the Numba fallback and gensim).
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct W2VArgs {
  // Matrices (V rows of ld floats each; ld is a multiple of 16, padding columns are 0).
  float* syn0 = nullptr;
  float* syn1neg = nullptr;  // negative > 0
  float* syn1 = nullptr;     // hs
  int64_t V = 0, ld = 0;
  // Corpus.
  const int32_t* words = nullptr;
  const int64_t* sent_off = nullptr;  // S + 1 offsets into words
  const int64_t* job_off = nullptr;   // J + 1 offsets into sentences
  int64_t n_jobs = 0;
  // Tables.
  const uint32_t* sample_thr = nullptr;  // keep word w if rand32 <= sample_thr[w]
  const uint32_t* alias_thr = nullptr;   // noise: pick i uniformly, keep i if rand32 < alias_thr[i]
  const int32_t* alias_idx = nullptr;    //        else alias_idx[i]
  const uint8_t* codes = nullptr;        // Huffman codes, path of w at code_off[w]..code_off[w+1]
  const int32_t* points = nullptr;       // inner-node rows of syn1 along that path
  const int64_t* code_off = nullptr;
  const float* lockf = nullptr;          // per-word factor on syn0 updates (gensim's vectors_lockf);
                                         // nullptr: 1 for every word (the plain update, no multiply)
  // Hyperparameters.
  int sg = 1, hs = 0, negative = 5, window = 5, cbow_mean = 1, shrink_windows = 1;
  double alpha = 0.025, min_alpha = 0.0001;
  int64_t epoch = 0, epochs = 1;   // progress for the linear learning-rate decay
  int64_t total_words = 0;         // words (in vocabulary) per epoch
  uint64_t seed = 1;
  int workers = 1;
  int compute_loss = 0;
};

struct W2VResult {
  double loss = 0.0;         // sum over trained (input, target) pairs of -log p, this epoch
  int64_t effective = 0;     // words kept after subsampling
  int64_t pairs = 0;         // trained examples (skip-gram pairs or CBOW windows)
};

struct W2VKernels {
  W2VResult (*train_epoch)(const W2VArgs&);
};

PYAIML_KERNEL_TABLE(W2VKernels, w2v_kernels)

}  // namespace pyaiml
