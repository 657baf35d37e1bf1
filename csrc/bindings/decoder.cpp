// bindings/decoder.cpp: one decode step of pyaiml.llm's decoder layers in native calls.
//
// _C.decode_attention(qkv, cache_k, cache_v, layer, start, H, Hk, scale, cos=None, sin=None,
// valid=None): one step's attention of a layer. qkv (B, 1, W) holds each sequence's new q (H
// heads), k and v (Hk heads each) of D values side by side; with cos and sin ((B, 1, D/2)) q
// and k get rotate-half RoPE first (rope_qk's arithmetic). k and v go into slot `start` of
// layer `layer` of the cache (layers, B, Hk, Tmax, D), then every q head attends over slots
// 0 .. start of its kv head, read in place, restricted to the slots where valid (B, Tmax) is
// true when given. Returns (B, 1, H D): the bits of rope_qk, the cache writes and
// attention_forward on the same arrays.
//
// _C.DecoderLayerPlan(...): a whole decoder layer for such a step (pre-norm, fused qkv
// product, the attention above, output product + residual, norm, MLP + residual: GPT-2's
// LayerNorm / GELU-tanh and Llama's RMSNorm / SwiGLU; each product float32 panels or int8
// panels with float16 scales, W8A8 or weight-only), its weights checked once when the plan is
// made and kept referenced; run(h, cache_k, cache_v, layer, start, cos, sin, valid) takes h
// (B, C) and returns the layer's output (B, C); run_rows(h, caches_k, caches_v, layer, starts,
// cos, sin) the same for rows that each have their own cache (the server's batch). Each piece
// is the kernel the layer-by-layer path calls (norm, the packed GEMV up to kGemvMaxRows rows
// and sgemm on the panels past it, decode attention, swiglu / gelu_tanh, float32 adds), in the
// same order, so the bits are that path's; a decode step of the Llama-110M spent ~0.5 ms of ~9
// in Python between them.
// Tests: tests/test_decode_attention.py (against the separate calls, a float64 layer, bad
// input), tests/test_llm_models.py (the models' and the server adapter's logits on plans
// against the layer-by-layer graph), tests/test_serve_llm.py (streams equal generate).
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/packed.h"
#include "common/parallel.h"
#include "cpu/act.h"
#include "cpu/attention.h"
#include "cpu/gemv.h"
#include "cpu/norm.h"

namespace pyaiml {
namespace {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buf = std::unique_ptr<float[], FreeDeleter>;

// 64-byte aligned, as the arrays the separate calls allocate (new_aligned_array)
Buf aligned_buf(int64_t n) {
  const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return Buf(p);
}

// The KV cache of a decode step, checked: (layers, B, Hk, Tmax, D) float32, C-contiguous,
// aligned, writeable, k and v alike; layer and start in range.
struct Cache {
  float* k = nullptr;
  float* v = nullptr;
  int64_t B = 0, T = 0, D = 0;
};

Cache check_cache(const char* op, py::array& cache_k, py::array& cache_v, int64_t layer, int64_t start, int64_t Hk) {
  require_dtype<float>(cache_k, op, "cache_k");
  require_dtype<float>(cache_v, op, "cache_v");
  require_ndim(cache_k, 5, op, "cache_k");
  require_ndim(cache_v, 5, op, "cache_v");
  PYAIML_CHECK((cache_k.flags() & py::array::c_style) && (cache_v.flags() & py::array::c_style) &&
                   is_aligned(cache_k) && is_aligned(cache_v) && cache_k.writeable() && cache_v.writeable(),
               op, ": cache_k and cache_v must be writeable, C-contiguous and aligned");
  for (int d = 0; d < 5; ++d)
    PYAIML_CHECK(cache_v.shape(d) == cache_k.shape(d), op, ": cache_k and cache_v must have the same shape. Received ",
                 shape_str(cache_k), " and ", shape_str(cache_v));
  PYAIML_CHECK(cache_k.shape(2) == Hk, op, ": the cache must hold Hk = ", Hk, " heads. Received cache_k ",
               shape_str(cache_k));
  const int64_t NL = cache_k.shape(0);
  Cache c;
  c.B = cache_k.shape(1);
  c.T = cache_k.shape(3);
  c.D = cache_k.shape(4);
  PYAIML_CHECK(layer >= 0 && layer < NL, op, ": layer must lie in [0, ", NL, "). Received ", layer);
  PYAIML_CHECK(start >= 0 && start < c.T, op, ": start must lie in [0, ", c.T, "). Received ", start);
  c.k = static_cast<float*>(cache_k.mutable_data()) + layer * c.B * Hk * c.T * c.D;
  c.v = static_cast<float*>(cache_v.mutable_data()) + layer * c.B * Hk * c.T * c.D;
  return c;
}

// RoPE tables and the valid mask of a step, checked against B and D (the arrays are kept
// referenced by the caller for the duration of the call).
struct StepTables {
  py::array_t<float, py::array::c_style | py::array::forcecast> cos, sin;
  py::array_t<bool, py::array::c_style | py::array::forcecast> valid;
  bool rope = false, masked = false;
};

StepTables check_tables(const char* op, const py::object& cos, const py::object& sin, const py::object& valid,
                        int64_t B, int64_t T, int64_t D) {
  StepTables t;
  t.rope = !cos.is_none();
  PYAIML_CHECK(t.rope == !sin.is_none(), op, ": cos and sin must be given together");
  const int64_t half = D / 2;
  if (t.rope) {
    t.cos = cos.cast<py::array>();
    t.sin = sin.cast<py::array>();
    PYAIML_CHECK(t.cos.ndim() == 3 && t.cos.shape(0) == B && t.cos.shape(1) == 1 && t.cos.shape(2) == half &&
                     t.sin.ndim() == 3 && t.sin.shape(0) == B && t.sin.shape(1) == 1 && t.sin.shape(2) == half,
                 op, ": cos and sin must be (B, 1, D/2) = (", B, ", 1, ", half, "). Received ", shape_str(t.cos), ", ",
                 shape_str(t.sin));
  }
  t.masked = !valid.is_none();
  if (t.masked) {
    t.valid = valid.cast<py::array>();
    PYAIML_CHECK(t.valid.ndim() == 2 && t.valid.shape(0) == B && t.valid.shape(1) == T, op,
                 ": valid must be (B, Tmax) = (", B, ", ", T, "). Received ", shape_str(t.valid));
  }
  return t;
}

// The attention of one decode step (see the file's head); qkv rows ld floats apart. Runs
// without the GIL.
// cos, sin: (B, D/2) RoPE tables or null; valid: (B, c.T) or null.
void decode_attention_core(const float* qkv, int64_t ld, int64_t B, int64_t H, int64_t Hk, int64_t D,
                           const Cache& c, int64_t start, const float* cos, const float* sin, const bool* valid,
                           float scale, float* out) {
  std::vector<float> qb(static_cast<size_t>(B * H * D)), kb(static_cast<size_t>(B * Hk * D)),
      lse(static_cast<size_t>(B * H));
  if (cos) {
    act_kernels().rope_qk(qkv, B, 1, ld, cos, sin, H, Hk, D, qb.data(), kb.data());
  } else {
    for (int64_t b = 0; b < B; ++b) {
      std::copy(qkv + b * ld, qkv + b * ld + H * D, qb.data() + b * H * D);
      std::copy(qkv + b * ld + H * D, qkv + b * ld + (H + Hk) * D, kb.data() + b * Hk * D);
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hk; ++h) {
      const int64_t slot = ((b * Hk + h) * c.T + start) * D;
      std::copy(kb.data() + (b * Hk + h) * D, kb.data() + (b * Hk + h + 1) * D, c.k + slot);
      const float* vs = qkv + b * ld + (H + Hk + h) * D;
      std::copy(vs, vs + D, c.v + slot);
    }
  AttnArgs a;
  a.N = B;
  a.Hq = H;
  a.Hk = Hk;
  a.Lq = 1;
  a.Lk = start + 1;
  a.D = a.Dv = D;
  a.q = qb.data();
  a.k = c.k;
  a.v = c.v;
  a.k_head_stride = a.v_head_stride = c.T * D;
  if (valid) {
    a.mask_kind = 1;
    a.mask = valid;
    a.ms[0] = c.T;
    a.ms[3] = 1;
  }
  a.scale = scale;
  a.out = out;
  a.lse = lse.data();
  const AttentionKernels& kt = attention_kernels();
  if (!kt.forward(a)) kt.forward_naive(a);
}

constexpr const char* kPlan = "DecoderLayerPlan";

// A float32 vector of n values or None.
py::object vec(const py::object& v, int64_t n, const char* name) {
  if (v.is_none()) return v;
  PYAIML_CHECK(py::isinstance<py::array>(v), kPlan, ": ", name, " must be a NumPy array or None");
  py::array a = py::reinterpret_borrow<py::array>(v);
  require_dtype<float>(a, kPlan, name);
  PYAIML_CHECK(a.ndim() == 1 && a.shape(0) == n && (a.flags() & py::array::c_style) && is_aligned(a), kPlan, ": ",
               name, " must be C-contiguous with shape (", n, ",). Received ", shape_str(a));
  return v;
}

const float* fptr(const py::object& v) {
  return v.is_none() ? nullptr : static_cast<const float*>(py::reinterpret_borrow<py::array>(v).data());
}

// One product of a plan: float32 weights in panels (ceil(n / 64), K, 64), or int8 ones with
// their float16 block scales ((q, scale, "int8" | "float"): QLinear's W8A8 or weight-only
// product), each run by the kernel its _C.linear_* call runs.
struct Product {
  int kind = 0;  // 0 float32, 1 W8A8, 2 int8 weights with float32 activations
  py::array w, s;
  py::object b;
  int64_t K = 0, n = 0;

  Product() = default;
  Product(const py::object& spec, int64_t K_, int64_t n_, const py::object& bias, const char* name) : K(K_), n(n_) {
    const int64_t P = (n + kPanel - 1) / kPanel;
    PYAIML_CHECK(n >= 1 && K >= 1, kPlan, ": ", name, " needs at least one input and output. Received ", K, " x ", n);
    if (py::isinstance<py::tuple>(spec)) {
      py::tuple t = spec.cast<py::tuple>();
      PYAIML_CHECK(t.size() == 3, kPlan, ": ", name, " as int8 must be (q, scale, 'int8' | 'float')");
      w = t[0].cast<py::array>();
      s = t[1].cast<py::array>();
      const std::string act = t[2].cast<std::string>();
      PYAIML_CHECK(act == "int8" || act == "float", kPlan, ": ", name, "'s activations must be 'int8' or 'float'. Received '",
                   act, "'");
      kind = act == "int8" ? 1 : 2;
      require_dtype<int8_t>(w, kPlan, name);
      PYAIML_CHECK(s.dtype().kind() == 'f' && s.itemsize() == 2, kPlan, ": ", name, "'s scales must be float16. Received ",
                   dtype_str(s));
      PYAIML_CHECK(K % kQ8Block == 0, kPlan, ": ", name, " as int8 needs inputs in blocks of ", kQ8Block, ". Received ", K);
      PYAIML_CHECK(w.ndim() == 3 && w.shape(0) == P && w.shape(1) == K && w.shape(2) == kQ8Panel &&
                       (w.flags() & py::array::c_style),
                   kPlan, ": ", name, " must be packed int8 (", P, ", ", K, ", ", kQ8Panel, "). Received ", shape_str(w));
      PYAIML_CHECK(s.ndim() == 3 && s.shape(0) == P && s.shape(1) == K / kQ8Block && s.shape(2) == kQ8Panel &&
                       (s.flags() & py::array::c_style) && is_aligned(s),
                   kPlan, ": ", name, "'s scales must be (", P, ", ", K / kQ8Block, ", ", kQ8Panel, "). Received ",
                   shape_str(s));
    } else {
      PYAIML_CHECK(py::isinstance<py::array>(spec), kPlan, ": ", name, " must be packed float32 panels or an int8 "
                   "(q, scale, activations) tuple");
      w = spec.cast<py::array>();
      require_dtype<float>(w, kPlan, name);
      require_ndim(w, 3, kPlan, name);
      PYAIML_CHECK((w.flags() & py::array::c_style) && is_aligned(w), kPlan, ": ", name,
                   " must be C-contiguous and aligned");
      PYAIML_CHECK(w.shape(0) == P && w.shape(1) == K && w.shape(2) == kPanel, kPlan, ": ", name,
                   " must be packed as (", P, ", ", K, ", ", kPanel, ") for ", K, " inputs and ", n,
                   " outputs. Received ", shape_str(w));
    }
    b = vec(bias, n, (std::string(name) + "_b").c_str());
  }

  // y (M, n) = x (M, K) @ W + b; without the GIL.
  void run(const float* x, int64_t M, float* y) const {
    const float* bias = fptr(b);
    if (kind == 0) {
      linear_packed(x, K, M, K, static_cast<const float*>(w.data()), n, bias, y);
      return;
    }
    linear_q8_panels(x, K, M, K, static_cast<const int8_t*>(w.data()), static_cast<const uint16_t*>(s.data()), n,
                     bias, y, kind == 1);
  }
};

struct DecoderLayerPlan {
  int64_t C = 0, H = 0, Hk = 0, D = 0, qkv_n = 0, up_n = 0, inter = 0;
  bool rms = false, swiglu = false, rope = false;
  float eps = 1e-5f, scale = 1.f;
  Product qkv, o, up, down;
  py::object ln1_w, ln1_b, ln2_w, ln2_b;

  DecoderLayerPlan(int64_t C_, int64_t H_, int64_t Hk_, int64_t D_, bool rms_, double eps_, const std::string& act,
                   bool rope_, double scale_, py::object ln1_w_, py::object ln1_b_, py::object qkv_, py::object qkv_b_,
                   py::object o_, py::object o_b_, py::object ln2_w_, py::object ln2_b_, py::object up_, int64_t up_n_,
                   py::object up_b_, py::object down_, py::object down_b_)
      : C(C_), H(H_), Hk(Hk_), D(D_), up_n(up_n_), rms(rms_), rope(rope_), eps(static_cast<float>(eps_)),
        scale(static_cast<float>(scale_)) {
    PYAIML_CHECK(C >= 1 && H >= 1 && Hk >= 1 && H % Hk == 0 && D >= 2 && D % 2 == 0, kPlan,
                 ": C, H, Hk, D must be >= 1 with H a multiple of Hk and D even. Received C=", C, ", H=", H, ", Hk=",
                 Hk, ", D=", D);
    PYAIML_CHECK(act == "swiglu" || act == "gelu_tanh", kPlan, ": act must be 'swiglu' or 'gelu_tanh'. Received '",
                 act, "'");
    swiglu = act == "swiglu";
    PYAIML_CHECK(up_n >= 1 && (!swiglu || up_n % 2 == 0), kPlan, ": up_n must be >= 1 (even for swiglu). Received ",
                 up_n);
    inter = swiglu ? up_n / 2 : up_n;
    qkv_n = (H + 2 * Hk) * D;
    PYAIML_CHECK(!rms || ln1_b_.is_none(), kPlan, ": an RMS norm takes no bias");
    ln1_w = vec(ln1_w_, C, "ln1_w");
    ln1_b = vec(ln1_b_, C, "ln1_b");
    ln2_w = vec(ln2_w_, C, "ln2_w");
    ln2_b = vec(ln2_b_, C, "ln2_b");
    qkv = Product(qkv_, C, qkv_n, qkv_b_, "qkv");
    o = Product(o_, H * D, C, o_b_, "o");
    up = Product(up_, C, up_n, up_b_, "up");
    down = Product(down_, inter, C, down_b_, "down");
  }

  // The layer for B rows h -> out, the attention step given (att = attend(q)); without the GIL.
  template <class Attend>
  void forward(int64_t B, const float* ph, float* po, Attend&& attend) const {
    Buf a = aligned_buf(B * C), q = aligned_buf(B * qkv_n), att = aligned_buf(B * H * D), y = aligned_buf(B * C),
        h1 = aligned_buf(B * C), u = aligned_buf(B * up_n), g = aligned_buf(B * inter);
    auto norm = [&](const float* x, const py::object& w, const py::object& b, float* dst) {
      NormArgs n;
      n.rows = B;
      n.n = C;
      n.x = x;
      n.ldx = C;
      n.w = fptr(w);
      n.b = fptr(b);
      n.eps = eps;
      n.rms = rms;
      n.y = dst;
      norm_kernels().norm(n);
    };
    norm(ph, ln1_w, ln1_b, a.get());
    qkv.run(a.get(), B, q.get());
    attend(q.get(), att.get());
    o.run(att.get(), B, y.get());
    for (int64_t i = 0; i < B * C; ++i) h1[i] = ph[i] + y[i];
    norm(h1.get(), ln2_w, ln2_b, a.get());
    up.run(a.get(), B, u.get());
    if (swiglu)
      act_kernels().swiglu(u.get(), up_n, g.get(), B, inter);
    else
      act_kernels().gelu_tanh(u.get(), g.get(), B * up_n);
    down.run(g.get(), B, y.get());
    for (int64_t i = 0; i < B * C; ++i) po[i] = h1[i] + y[i];
  }

  int64_t check_h(const py::array& h) const {
    require_dtype<float>(h, kPlan, "h");
    require_ndim(h, 2, kPlan, "h");
    PYAIML_CHECK((h.flags() & py::array::c_style) && is_aligned(h) && h.shape(1) == C, kPlan,
                 ": h must be C-contiguous (B, ", C, "). Received ", shape_str(h));
    return h.shape(0);
  }

  py::array run(py::array h, py::array cache_k, py::array cache_v, int64_t layer, int64_t start, py::object cos,
                py::object sin, py::object valid) const {
    const int64_t B = check_h(h);
    Cache c = check_cache(kPlan, cache_k, cache_v, layer, start, Hk);
    PYAIML_CHECK(c.B == B && c.D == D, kPlan, ": the cache must be (layers, ", B, ", ", Hk, ", Tmax, ", D,
                 "). Received ", shape_str(cache_k));
    StepTables t = check_tables(kPlan, cos, sin, valid, B, c.T, D);
    PYAIML_CHECK(t.rope == rope, kPlan, rope ? ": this layer takes RoPE tables (cos, sin)" : ": this layer takes no RoPE tables");
    py::array_t<float> out = new_aligned_array<float>({B, C});
    const float* ph = static_cast<const float*>(h.data());
    float* po = out.mutable_data();
    const float* pc = t.rope ? t.cos.data() : nullptr;
    const float* ps = t.rope ? t.sin.data() : nullptr;
    const bool* pv = t.masked ? t.valid.data() : nullptr;
    {
      py::gil_scoped_release nogil;
      forward(B, ph, po, [&](const float* q, float* att) {
        decode_attention_core(q, qkv_n, B, H, Hk, D, c, start, pc, ps, pv, scale, att);
      });
    }
    return std::move(out);
  }

  // Row b of h is one sequence with its own cache (caches_k[b] / caches_v[b]: (layers, 1, Hk,
  // Tmax_b, D)) and its own slot starts[b]: the server's batch, whose sequences join and leave
  // at any step. The products take the B rows together; each row's attention is a one-row
  // decode_attention on its own cache (the rows spread over the pool).
  py::array run_rows(py::array h, py::sequence caches_k, py::sequence caches_v, int64_t layer, py::sequence starts,
                     py::object cos, py::object sin) const {
    const int64_t B = check_h(h);
    PYAIML_CHECK(static_cast<int64_t>(py::len(caches_k)) == B && static_cast<int64_t>(py::len(caches_v)) == B &&
                     static_cast<int64_t>(py::len(starts)) == B,
                 kPlan, ": caches_k, caches_v and starts must hold one entry per row of h (", B, "). Received ",
                 py::len(caches_k), ", ", py::len(caches_v), ", ", py::len(starts));
    std::vector<py::array> keep;
    keep.reserve(2 * B);
    std::vector<Cache> cs(B);
    std::vector<int64_t> st(B);
    for (int64_t b = 0; b < B; ++b) {
      PYAIML_CHECK(py::isinstance<py::array>(caches_k[b]) && py::isinstance<py::array>(caches_v[b]), kPlan,
                   ": caches_k[", b, "] and caches_v[", b, "] must be NumPy arrays");
      keep.push_back(caches_k[b].cast<py::array>());
      keep.push_back(caches_v[b].cast<py::array>());
      st[b] = starts[b].cast<int64_t>();
      cs[b] = check_cache(kPlan, keep[2 * b], keep[2 * b + 1], layer, st[b], Hk);
      PYAIML_CHECK(cs[b].B == 1 && cs[b].D == D, kPlan, ": caches_k[", b, "] must be (layers, 1, ", Hk, ", Tmax, ", D,
                   "). Received ", shape_str(keep[2 * b]));
    }
    StepTables t = check_tables(kPlan, cos, sin, py::none(), B, 1, D);
    PYAIML_CHECK(t.rope == rope, kPlan, rope ? ": this layer takes RoPE tables (cos, sin)" : ": this layer takes no RoPE tables");
    py::array_t<float> out = new_aligned_array<float>({B, C});
    const float* ph = static_cast<const float*>(h.data());
    float* po = out.mutable_data();
    const int64_t half = D / 2;
    const float* pc = t.rope ? t.cos.data() : nullptr;
    const float* ps = t.rope ? t.sin.data() : nullptr;
    {
      py::gil_scoped_release nogil;
      forward(B, ph, po, [&](const float* q, float* att) {
        parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b)
            decode_attention_core(q + b * qkv_n, qkv_n, 1, H, Hk, D, cs[b], st[b], pc ? pc + b * half : nullptr,
                                  ps ? ps + b * half : nullptr, nullptr, scale, att + b * H * D);
        });
      });
    }
    return std::move(out);
  }
};

}  // namespace

void register_decoder(py::module_& m) {
  m.def(
      "decode_attention",
      [](py::array qkv, py::array cache_k, py::array cache_v, int64_t layer, int64_t start, int64_t H, int64_t Hk,
         double scale, py::object cos, py::object sin, py::object valid) {
        const char* op = "decode_attention";
        require_dtype<float>(qkv, op, "qkv");
        require_ndim(qkv, 3, op, "qkv");
        PYAIML_CHECK(H >= 1 && Hk >= 1 && H % Hk == 0, op, ": H must be a multiple of Hk (both >= 1). Received H=", H,
                     ", Hk=", Hk);
        Cache c = check_cache(op, cache_k, cache_v, layer, start, Hk);
        const int64_t B = c.B, D = c.D;
        PYAIML_CHECK(D >= 2 && D % 2 == 0, op, ": the head dim must be even and >= 2. Received ", D);
        PYAIML_CHECK(qkv.shape(0) == B && qkv.shape(1) == 1 && qkv.shape(2) >= (H + 2 * Hk) * D, op,
                     ": qkv must be (B, 1, >= (H + 2 Hk) D) = (", B, ", 1, ", (H + 2 * Hk) * D, "). Received ",
                     shape_str(qkv));
        qkv = aligned(qkv);
        auto sq = elem_strides(qkv, op, "qkv");
        PYAIML_CHECK(sq[2] == 1, op, ": qkv's rows must be contiguous");
        StepTables t = check_tables(op, cos, sin, valid, B, c.T, D);
        py::array_t<float> out = new_aligned_array<float>({B, 1, H * D});
        const float* px = static_cast<const float*>(qkv.data());
        float* po = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          decode_attention_core(px, sq[0], B, H, Hk, D, c, start, t.rope ? t.cos.data() : nullptr,
                                t.rope ? t.sin.data() : nullptr, t.masked ? t.valid.data() : nullptr,
                                static_cast<float>(scale), po);
        }
        return out;
      },
      py::arg("qkv"), py::arg("cache_k"), py::arg("cache_v"), py::arg("layer"), py::arg("start"), py::arg("H"),
      py::arg("Hk"), py::arg("scale"), py::arg("cos") = py::none(), py::arg("sin") = py::none(),
      py::arg("valid") = py::none());

  py::class_<DecoderLayerPlan>(m, "DecoderLayerPlan")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, bool, double, const std::string&, bool, double, py::object,
                    py::object, py::object, py::object, py::object, py::object, py::object, py::object, py::object,
                    int64_t, py::object, py::object, py::object>(),
           py::arg("C"), py::arg("H"), py::arg("Hk"), py::arg("D"), py::arg("rms"), py::arg("eps"), py::arg("act"),
           py::arg("rope"), py::arg("scale"), py::arg("ln1_w"), py::arg("ln1_b"), py::arg("qkv"), py::arg("qkv_b"),
           py::arg("o"), py::arg("o_b"), py::arg("ln2_w"), py::arg("ln2_b"), py::arg("up"), py::arg("up_n"),
           py::arg("up_b"), py::arg("down"), py::arg("down_b"))
      .def("run", &DecoderLayerPlan::run, py::arg("h"), py::arg("cache_k"), py::arg("cache_v"), py::arg("layer"),
           py::arg("start"), py::arg("cos") = py::none(), py::arg("sin") = py::none(), py::arg("valid") = py::none())
      .def("run_rows", &DecoderLayerPlan::run_rows, py::arg("h"), py::arg("caches_k"), py::arg("caches_v"),
           py::arg("layer"), py::arg("starts"), py::arg("cos") = py::none(), py::arg("sin") = py::none());
}

}  // namespace pyaiml
