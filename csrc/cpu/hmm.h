// hmm.h: hidden Markov model kernels, float64, batched over many sequences of different
// lengths in one call (frames concatenated, sequence s = frames offsets[s]..offsets[s+1]):
// forward-backward in scaled-probability space or in log space (log-likelihood per
// sequence, state posteriors, expected transition counts summed over time and sequences),
// Viterbi, posterior-weighted sums of the frames and their squares (Gaussian M-step
// statistics) without writing posteriors out, and per-frame emission log-likelihoods for diagonal and full-covariance
// Gaussians. Threaded across sequences; sums over sequences are taken in a fixed order, so
// results do not depend on the thread count.
//
// Not here: argument checks (bindings/hmm.cpp), M-steps and models (pyaiml/hmm), float32
// (ops/hmm.py computes float32 input in float64 and casts back).
// Tests: tests/test_hmm_ops.py (against pyaiml/reference/hmm.py and hmmlearn).
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct HmmFbArgs {
  int64_t S = 0, K = 0, N = 0;        // sequences, states, frames
  const int64_t* offsets = nullptr;   // (S + 1,), offsets[0] = 0, offsets[S] = N, strictly increasing
  const double* startprob = nullptr;  // (K,)
  const double* transmat = nullptr;   // (K, K) row-stochastic
  const double* logb = nullptr;       // (N, K) emission log-likelihoods, or (M, K) table if sym
  const int64_t* sym = nullptr;       // (N,) symbols in [0, M) or null: row t is logb[sym[t]]
  int64_t n_symbols = 0;              // M
  bool log_space = false;             // false: scaled probabilities; true: log-space recursions
  double* logprob = nullptr;          // (S,) out; -inf for a sequence the model cannot emit
  double* post = nullptr;             // (N, K) out or null: state posteriors (NaN rows when -inf)
  double* xi = nullptr;               // (K, K) out or null: expected transition counts
  double* counts = nullptr;           // (M, K) out or null (needs sym): sum of posteriors per symbol
  double* start = nullptr;            // (K,) out or null: sum over sequences of posteriors at t = 0
  // Emission statistics for Gaussian M-steps (all null, or obs and all three outputs):
  const double* obs = nullptr;        // (N, D) frames
  int64_t D = 0;
  double* post_sum = nullptr;         // (K,) out: sum over frames of the posteriors
  double* obs_sum = nullptr;          // (K, D) out: sum over frames of posterior * x
  double* obs_sq = nullptr;           // (K, D) out: sum over frames of posterior * x^2
};

struct HmmViterbiArgs {
  int64_t S = 0, K = 0, N = 0;
  const int64_t* offsets = nullptr;
  const double* log_startprob = nullptr;  // (K,) logs, taken as given (-inf allowed)
  const double* log_transmat = nullptr;   // (K, K)
  const double* logb = nullptr;  // (N, K), or (M, K) table if sym
  const int64_t* sym = nullptr;
  int64_t n_symbols = 0;      // M (rows of the table) when sym is given
  double* logprob = nullptr;  // (S,) out: log-probability of the best path
  int64_t* states = nullptr;  // (N,) out; ties: first state at the last frame, then the
                              // highest-index predecessor (the same path as hmmlearn 0.3)
};

struct HmmKernels {
  void (*forward_backward)(const HmmFbArgs&);
  void (*viterbi)(const HmmViterbiArgs&);
  // out (N, K) = cst[k] - 0.5 * sum_d (X[t,d] - means[k,d])^2 * prec[k,d], computed in the
  // expanded form cst'[k] + sum_d x (mu p)[k,d] - 0.5 x^2 p[k,d] on centred features
  void (*loglik_diag)(int64_t N, int64_t D, int64_t K, const double* X, const double* means,
                      const double* prec, const double* cst, double* out);
  // out (N, K) = cst[k] - 0.5 * |P_k (X[t] - means[k])|^2, P_k (D, D) lower triangular
  void (*loglik_full)(int64_t N, int64_t D, int64_t K, const double* X, const double* means,
                      const double* pchol, const double* cst, double* out);
};

PYAIML_KERNEL_TABLE(HmmKernels, hmm_kernels)

}  // namespace pyaiml
