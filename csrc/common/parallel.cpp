// parallel.cpp: the thread pool behind parallel_for. Workers spin for a while after a job
// (back-to-back kernel calls then cost no wake-up) and sleep on a condition variable after;
// a worker that is late for a job skips it instead of holding up the caller.
#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYAIML_PAUSE() _mm_pause()
#else
#define PYAIML_PAUSE() std::this_thread::yield()
#endif

namespace pyaiml {

namespace {

thread_local int tl_index = 0;
thread_local bool tl_in_region = false;

// How long an idle worker spins (checking for the next job) before it sleeps: 1 ms by
// default, PYAIML_SPIN_US to change it (0: sleep at once). A worker that has gone to sleep
// takes tens of microseconds to wake, and on a VM the host may deschedule an idle vCPU for
// milliseconds; with calls in a burst (a training step, a benchmark loop) the workers stay
// awake. The cost is one busy core for up to 1 ms after the last call, far less than the
// OpenMP runtimes' defaults.
// set_spin_us changes it at run time (the torch bridge sets 0: torch's own pool runs next).
std::atomic<int64_t> g_spin_ns{-1};
// Bumped by park_threads(): a spinning worker that sees it change stops spinning and sleeps.
std::atomic<uint64_t> g_park{0};

int64_t spin_ns_from_env() {
  if (const char* env = std::getenv("PYAIML_SPIN_US")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 0 && v <= 10000000) return int64_t(v) * 1000;
  }
  return 1000000;
}

int64_t get_spin_ns() {
  int64_t v = g_spin_ns.load(std::memory_order_relaxed);
  if (v < 0) {
    v = spin_ns_from_env();
    g_spin_ns.store(v, std::memory_order_relaxed);
  }
  return v;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Jobs are announced by bumping gen_. A worker takes part in a job only if it joins while the
// job is still open: slot_ holds (job << 8) | open bit (0x80) | number joined. The caller works
// through the chunks itself, then closes the job and waits only for the workers that joined
// (they are running chunks). A worker that wakes late finds the job closed and skips it, so a
// descheduled worker costs the caller nothing beyond doing its share.
class Pool {
 public:
  explicit Pool(int n) { start(n); }
  ~Pool() { stop(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    std::lock_guard<std::mutex> g(run_mutex_);
    stop();
    start(n);
  }

  // Returns false when the pool is busy; the caller then runs serially.
  bool run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
    std::unique_lock<std::mutex> g(run_mutex_, std::try_to_lock);
    if (!g.owns_lock() || tl_in_region) return false;
    const int64_t nchunks = (n + grain - 1) / grain;
    const int helpers = static_cast<int>(std::min<int64_t>(nthreads_ - 1, nchunks - 1));
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    grain_ = grain;
    nchunks_ = nchunks;
    helpers_.store(helpers, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    const uint64_t job = gen_.load(std::memory_order_relaxed) + 1;
    // park_threads() calls from now on send this job's workers to sleep when they are done
    // (published to them with gen_ below).
    park_base_.store(g_park.load(std::memory_order_relaxed), std::memory_order_relaxed);
    slot_.store((job << 8) | kOpen, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(sleep_mutex_);
      gen_.store(job, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) sleep_cv_.notify_all();
    work(0);
    // Close the job; only the workers that joined before this are waited for.
    uint64_t s = slot_.load(std::memory_order_acquire);
    while (!slot_.compare_exchange_weak(s, s & ~uint64_t(kOpen), std::memory_order_acq_rel)) {
    }
    const int joined = static_cast<int>(s & kCount);
    while (done_.load(std::memory_order_acquire) < joined) PYAIML_PAUSE();
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  static constexpr uint64_t kOpen = 0x80, kCount = 0x7f;

  void start(int n) {
    nthreads_ = std::clamp(n, 1, kMaxThreads);  // set_num_threads checks; the joined count has 7 bits
    quit_ = false;
    const uint64_t g0 = gen_.load(std::memory_order_acquire);
    for (int i = 1; i < nthreads_; ++i) workers_.emplace_back([this, i, g0] { loop(i, g0); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(sleep_mutex_);
      quit_ = true;
      gen_.fetch_add(1, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void work(int index) {
    tl_index = index;
    tl_in_region = true;
    try {
      for (;;) {
        const int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
        if (c >= nchunks_) break;
        const int64_t b = c * grain_;
        const int64_t e = std::min(n_, b + grain_);
        fn_(ctx_, b, e);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mutex_);
      if (!error_) error_ = std::current_exception();
      next_.store(nchunks_, std::memory_order_relaxed);
    }
    tl_in_region = false;
    tl_index = 0;
  }

  // Joins job `job` if it is still open and has room for this worker.
  bool join(uint64_t job, int index) {
    uint64_t s = slot_.load(std::memory_order_acquire);
    for (;;) {
      if ((s >> 8) != (job & (~uint64_t(0) >> 8)) || !(s & kOpen)) return false;
      if (index > helpers_.load(std::memory_order_relaxed)) return false;
      if (slot_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return true;
    }
  }

  void loop(int index, uint64_t seen) {
    for (;;) {
      uint64_t g = gen_.load(std::memory_order_acquire);
      const int64_t spin_ns = get_spin_ns();
      if (g == seen && spin_ns > 0) {
        const int64_t deadline = now_ns() + spin_ns;
        // Compared with the count when the last job was announced, not when this spin began:
        // a park_threads() made right after the caller's return, while this worker was still
        // on its way here (descheduled after its last chunk), must still stop the spin (read
        // at this point, that call was missed and the worker spun its whole spin time).
        const uint64_t park = park_base_.load(std::memory_order_relaxed);
        for (int s = 1; g == seen; ++s) {
          PYAIML_PAUSE();
          g = gen_.load(std::memory_order_acquire);
          if ((s & 63) == 0 && (now_ns() > deadline || g_park.load(std::memory_order_relaxed) != park)) break;
        }
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(sleep_mutex_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        sleep_cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        g = gen_.load(std::memory_order_acquire);
      }
      seen = g;
      if (quit_) return;
      if (join(g, index)) {
        work(index);
        done_.fetch_add(1, std::memory_order_release);
      }
    }
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, sleep_mutex_, error_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<uint64_t> slot_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> done_{0};
  std::atomic<uint64_t> park_base_{0};  // g_park when the last job was announced
  bool quit_ = false;
  RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, grain_ = 1, nchunks_ = 0;
  std::atomic<int> helpers_{0};
  std::exception_ptr error_;
};

std::atomic<int> g_num_threads{0};
std::mutex g_pool_mutex;
Pool* g_pool = nullptr;  // intentionally leaked at exit: joining threads during interpreter teardown can hang

Pool& pool() {
  std::lock_guard<std::mutex> g(g_pool_mutex);
  if (!g_pool) g_pool = new Pool(get_num_threads());
  return *g_pool;
}

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("PYAIML_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    // pyaiml/_backend.py rejects other values at import.
    if (end != env && *end == '\0' && v >= 1 && v <= kMaxThreads) return static_cast<int>(v);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c >= 1) return std::min(c, kMaxThreads);
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? std::min(static_cast<int>(hc), kMaxThreads) : 1;
}

int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = default_num_threads();
    g_num_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw std::invalid_argument("set_num_threads: n must be from 1 to " + std::to_string(kMaxThreads) +
                                ". Received " + std::to_string(n));
  g_num_threads.store(n, std::memory_order_relaxed);
  std::lock_guard<std::mutex> g(g_pool_mutex);
  if (g_pool && g_pool->size() != n) g_pool->resize(n);
}

int64_t get_spin_us() { return get_spin_ns() / 1000; }

void park_threads() { g_park.fetch_add(1, std::memory_order_relaxed); }

void set_spin_us(int64_t us) {
  if (us < 0 || us > 10000000)
    throw std::invalid_argument("set_spin_us: us must be from 0 to 10000000. Received " + std::to_string(us));
  g_spin_ns.store(us * 1000, std::memory_order_relaxed);
}

int thread_index() { return tl_index; }

namespace {

// The host process's OpenMP runtime (set_host_openmp): libgomp's entry point of a parallel
// region, which runs fn(data) on num_threads threads of the calling thread's team (the caller
// is thread 0) and returns when all have finished.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpInt = int (*)();
struct HostOmp {
  GompParallel parallel = nullptr;
  OmpInt thread_num = nullptr;
  OmpInt in_parallel = nullptr;
};
std::atomic<const HostOmp*> g_host_omp{nullptr};
// One region at a time, as with the pool: a second caller (another Python thread) runs its
// chunks serially rather than starting a second team on the same cores.
std::mutex g_omp_mutex;

struct OmpJob {
  RangeFn fn;
  void* ctx;
  int64_t n, grain, nchunks;
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  const HostOmp* omp;
};

void omp_body(void* p) {
  OmpJob& j = *static_cast<OmpJob*>(p);
  const int prev = tl_index;
  const bool prev_in = tl_in_region;
  tl_index = j.omp->thread_num();
  tl_in_region = true;
  try {
    for (;;) {
      const int64_t c = j.next.fetch_add(1, std::memory_order_relaxed);
      if (c >= j.nchunks) break;
      const int64_t b = c * j.grain;
      j.fn(j.ctx, b, std::min(j.n, b + j.grain));
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(j.error_mutex);
    if (!j.error) j.error = std::current_exception();
    j.next.store(j.nchunks, std::memory_order_relaxed);
  }
  tl_in_region = prev_in;
  tl_index = prev;
}

}  // namespace

bool set_host_openmp(bool on) {
  if (!on) {
    g_host_omp.store(nullptr, std::memory_order_release);
    return true;
  }
#if defined(__linux__)
  // Only a runtime already in the process (RTLD_NOLOAD): torch's libgomp, or Intel's, which
  // exports the same GOMP entry points.
  for (const char* lib : {"libgomp.so.1", "libiomp5.so"}) {
    void* h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
    if (!h) continue;
    static HostOmp omp;
    omp.parallel = reinterpret_cast<GompParallel>(dlsym(h, "GOMP_parallel"));
    omp.thread_num = reinterpret_cast<OmpInt>(dlsym(h, "omp_get_thread_num"));
    omp.in_parallel = reinterpret_cast<OmpInt>(dlsym(h, "omp_in_parallel"));
    if (omp.parallel && omp.thread_num && omp.in_parallel) {
      g_host_omp.store(&omp, std::memory_order_release);
      return true;
    }
  }
#endif
  return false;
}

bool get_host_openmp() { return g_host_omp.load(std::memory_order_acquire) != nullptr; }

void parallel_for_impl(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (const HostOmp* omp = g_host_omp.load(std::memory_order_acquire)) {
    if (tl_in_region || omp->in_parallel()) {
      fn(ctx, 0, n);  // nested: serially, as the pool does
      return;
    }
    std::unique_lock<std::mutex> g(g_omp_mutex, std::try_to_lock);
    if (!g.owns_lock()) {
      fn(ctx, 0, n);  // another thread's region is running: serially, as the pool does
      return;
    }
    OmpJob j;
    j.fn = fn;
    j.ctx = ctx;
    j.n = n;
    j.grain = grain;
    j.nchunks = (n + grain - 1) / grain;
    j.omp = omp;
    const int64_t nt = std::min<int64_t>(get_num_threads(), j.nchunks);
    omp->parallel(&omp_body, &j, static_cast<unsigned>(nt), 0);
    if (j.error) std::rethrow_exception(j.error);
    return;
  }
  if (!pool().run(n, grain, fn, ctx)) fn(ctx, 0, n);
}

}  // namespace pyaiml
