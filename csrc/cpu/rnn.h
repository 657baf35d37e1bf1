// rnn.h: the LSTM and GRU recurrences over a whole sequence on CPU, forward and backward
// through time, float32. LSTM: Keras 3's cell, gates i, f, c, o along the last axis, sigmoid
// for i, f, o and tanh for the candidate and the output (the defaults; other activations
// stay in NumPy, pyaiml/keras/recurrent.py); the GRU is described at GruArgs below.
//
//   z_t = xp_t + h_{t-1} U        (xp: the input projection x W + b, given for all steps)
//   i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_c)
//   c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)
//   a padded step (mask 0) keeps h and c: h_t = h_{t-1}, c_t = c_{t-1}
//
// Per step: the recurrent GEMM through sgemm_st on a copy of U packed into column panels
// that the GEMM reads in place (2 NR columns each, so it packs neither operand), then the
// gates' pointwise math fused in one pass per row. Rows (the batch) are independent, so the
// batch is split over the thread pool once for the whole sequence: no synchronisation per
// step. The backward runs the same way (fused dgates, then dh_{t-1} = dz_t U^T per step) and
// finishes with dU = sum_t h_{t-1}^T dz_t as one GEMM over all steps, its columns split over
// the pool (with the projection's dW and db in the same GEMM when x is given).
//
// Layout (pyaiml/ops/rnn.py prepares it; all C-contiguous): B batch, T steps, H units,
// G = 4H. xp (B, T, G); U (H, G); h0, c0 (B, H); mask (B, T) uint8 or null.
// Saved by the forward for the backward: gates (B, T, G) activated, cs (B, T + 1, H) with
// cs[:, 0] = c0 and cs[:, t + 1] = c_t, tc (B, T, H) = tanh of the step's new cell.
// Not here: argument validation (bindings/rnn.cpp), float64, other activations, GRU with
// reset_after=False, SimpleRNN.
// Tests: tests/test_rnn_kernel.py (torch autograd in float64, the NumPy reference, every ISA).
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct LstmArgs {
  int64_t B = 0, T = 0, H = 0;
  const float* xp = nullptr;     // (B, T, 4H)
  const float* U = nullptr;      // (H, 4H)
  const float* h0 = nullptr;     // (B, H)
  const float* c0 = nullptr;     // (B, H)
  const uint8_t* mask = nullptr; // (B, T) or null (every step real)
  // forward outputs (the backward reads them)
  float* hs = nullptr;           // (B, T, H) h_1 .. h_T
  float* cs = nullptr;           // (B, T + 1, H)
  float* gates = nullptr;        // (B, T, 4H)
  float* tc = nullptr;           // (B, T, H)
  // backward
  const float* dhs = nullptr;    // (B, T, H) gradient of hs, or null (zeros)
  const float* dcT = nullptr;    // (B, H) gradient of c_T, or null (zeros)
  float* dxp = nullptr;          // (B, T, 4H)
  float* dU = nullptr;           // (H, 4H) or null (not wanted)
  float* dh0 = nullptr;          // (B, H)
  float* dc0 = nullptr;          // (B, H)
  // optional: the projection's input x (B, T, D), xp = x W + b; then dW (D, 4H) = x^T dxp and
  // db (4H,) = the column sums of dxp, in the same GEMM as dU (dW and db both set, or neither)
  int64_t D = 0;
  const float* x = nullptr;
  float* dW = nullptr;
  float* db = nullptr;
  // optional: the projection's kernel W (D, 4H); then dx (B, T, D) = dxp W^T, each thread's
  // rows as soon as its part of the time loop is done
  const float* Wk = nullptr;
  float* dx = nullptr;
};

// GRU, Keras 3's reset_after=True (its default, torch.nn.GRU's formula), gates z, r, h:
//   a_t = h_{t-1} U + b_rec                (b_rec: the recurrent bias, (3H,), or null = 0)
//   z, r = sigmoid(xp_z + a_z, xp_r + a_r);  n = tanh(xp_h + r a_h)
//   h_t = z h_{t-1} + (1 - z) n;  a padded step keeps h
// Saved by the forward: gates (B, T, 3H) = z, r, n; hn (B, T, H) = a_h.
struct GruArgs {
  int64_t B = 0, T = 0, H = 0;
  const float* xp = nullptr;     // (B, T, 3H)
  const float* U = nullptr;      // (H, 3H)
  const float* brec = nullptr;   // (3H,) or null
  const float* h0 = nullptr;     // (B, H)
  const uint8_t* mask = nullptr; // (B, T) or null
  float* hs = nullptr;           // (B, T, H)
  float* gates = nullptr;        // (B, T, 3H)
  float* hn = nullptr;           // (B, T, H)
  const float* dhs = nullptr;    // (B, T, H) or null
  float* dxp = nullptr;          // (B, T, 3H)
  float* dU = nullptr;           // (H, 3H) or null
  float* dbrec = nullptr;        // (3H,) or null
  float* dh0 = nullptr;          // (B, H)
};

struct RnnKernels {
  void (*lstm_forward)(const LstmArgs&);
  void (*lstm_backward)(const LstmArgs&);
  void (*gru_forward)(const GruArgs&);
  void (*gru_backward)(const GruArgs&);
};

PYAIML_KERNEL_TABLE(RnnKernels, rnn_kernels)

}  // namespace pyaiml
