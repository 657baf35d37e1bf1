// parallel.h: pyaiml's one thread pool. Sized by set_num_threads (PYAIML_NUM_THREADS or the
// usable cores at start). Kernels call parallel_for with the GIL released. A call made while
// the pool is busy (from a worker, or from a second Python thread) runs serially on the
// caller, so nesting and concurrent callers are safe. Work is split into fixed chunks, so a
// kernel whose chunks do not share state gives the same result for any thread count.
#pragma once
#include <cstdint>
#include <utility>

namespace pyaiml {

// Largest pool: the job slot counts the workers that joined in 7 bits (parallel.cpp).
// pyaiml/_backend.py MAX_THREADS is the same number.
constexpr int kMaxThreads = 128;

int get_num_threads();
void set_num_threads(int n);  // 1 <= n <= kMaxThreads, else std::invalid_argument
int default_num_threads();    // PYAIML_NUM_THREADS, else usable cores, at most kMaxThreads
// How long idle workers spin before sleeping (PYAIML_SPIN_US at start, 1000 by default);
// 0 <= us <= 10^7, else std::invalid_argument. Takes effect from the workers' next idle wait.
int64_t get_spin_us();
void set_spin_us(int64_t us);
// Workers spinning now stop and sleep (within about 64 pause instructions); the next job
// wakes them as usual. For a caller that knows no kernel call follows soon and that its
// cores are wanted elsewhere (the server's batcher under concurrent load).
void park_threads();

// Run parallel_for on the OpenMP runtime already loaded in the process (torch's libgomp)
// instead of pyaiml's pool: inside PyTorch the two pools otherwise take turns on the same
// cores, torch's threads spinning after each of torch's ops while pyaiml's run (the torch
// bridge turns it on). The chunks and their order stay pyaiml's, so results do not change.
// Returns false (and changes nothing) when no such runtime is loaded; off: the pool again.
bool set_host_openmp(bool on);
bool get_host_openmp();

// Index of the calling participant within the current parallel_for, in [0, num_threads).
// 0 outside a parallel region. Use it to pick per-thread scratch.
int thread_index();

using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void parallel_for_impl(int64_t n, int64_t grain, RangeFn fn, void* ctx);

// Calls f(begin, end) over [0, n) in chunks of `grain` items (the last may be shorter),
// distributed dynamically over the pool.
template <class F>
inline void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (n <= grain || get_num_threads() == 1) {
    f(int64_t(0), n);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  parallel_for_impl(
      n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// Splits [0, n) into at most num_threads near-equal contiguous parts (each a multiple of
// `align` except the last) and calls f(part_begin, part_end) for each in parallel.
template <class F>
inline void parallel_for_static(int64_t n, int64_t align, F&& f) {
  if (n <= 0) return;
  if (align < 1) align = 1;
  const int64_t units = (n + align - 1) / align;
  int64_t parts = get_num_threads();
  if (parts > units) parts = units;
  if (parts <= 1) {
    f(int64_t(0), n);
    return;
  }
  const int64_t per = (units + parts - 1) / parts;
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t b = p * per * align;
      int64_t e = (p + 1) * per * align;
      if (e > n) e = n;
      if (b < e) f(b, e);
    }
  });
}

}  // namespace pyaiml
