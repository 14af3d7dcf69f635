#pragma once
// Host emulation of the parts of the CUDA execution model that csrc/cuda's kernels use, so
// that g++ compiles and runs the real kernel and launch code (tests/test_cuda_emulated.py).
//
// Modelled: a grid runs one CTA after another; a CTA's threads are fibers on one OS thread,
// each running until it blocks at a barrier: __syncthreads(_or) for the CTA, and the warp
// exchanges __shfl_xor_sync / __shfl_sync / __shfl_up_sync / __ballot_sync, which wait for
// all 32 lanes. Threads run as far as they can and the order alternates each sweep, so a
// missing barrier shows up as stale shared memory in the results. A barrier some thread never
// reaches (divergence), mixed barrier kinds, a partial warp mask and launches outside CUDA's
// grid/block limits are reported as launch errors. __shared__ is a function static (one CTA runs at
// a time).
// __half / __nv_bfloat16 are floats rounded to their precision.
//
// Not seen: real concurrency (data races beyond barrier order, memory ordering), memory
// errors (out of bounds, uninitialised reads — the test's canaries catch only some), timing,
// occupancy, register or shared-memory limits. That needs a GPU and compute-sanitizer
// (memcheck, racecheck, synccheck).
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
// Set by the scheduler before it resumes a fiber; only one runs at a time.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

struct __half {
  float v;
};
struct __nv_bfloat16 {
  float v;
};
inline float __half2float(__half h) { return h.v; }
inline float __bfloat162float(__nv_bfloat16 h) { return h.v; }
inline __half __float2half_rn(float v) {
  return __half{static_cast<float>(static_cast<_Float16>(v))};
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) <= 0x7f800000u) {  // not NaN: round to nearest even on 16 bits
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(&v, &u, 4);
  }
  return __nv_bfloat16{v};
}

namespace emu {

enum Kind { kSync = 1, kSyncOr = 2, kWarp = 3 };

struct Barrier {
  unsigned size = 0, arrived = 0;
  uint64_t gen = 0;
  int kind = 0;  // of the phase in progress
  int or_acc = 0, or_result = 0;
};

struct Fiber {
  ucontext_t ctx;
  Barrier* waiting = nullptr;
  uint64_t gen_seen = 0;
  bool done = false;
};

struct Cta {
  std::vector<Fiber> fibers;
  Barrier sync;
  std::vector<Barrier> warp;
  std::vector<unsigned char> xchg;  // [warp][gen parity][lane][8 bytes]
  ucontext_t sched;
  Fiber* cur = nullptr;
  std::function<void()> body;
  std::string error;
};
inline Cta* g_cta = nullptr;

inline void fail(const std::string& what) {
  if (g_cta->error.empty()) g_cta->error = what;
}

// Arrive at b; returns the generation of the phase arrived at, after it completed.
inline uint64_t arrive(Barrier& b, int kind) {
  Cta& c = *g_cta;
  if (b.arrived == 0)
    b.kind = kind;
  else if (b.kind != kind)
    fail("threads of one barrier phase called different barriers");
  const uint64_t g = b.gen;
  if (++b.arrived == b.size) {
    b.arrived = 0;
    b.or_result = b.or_acc;
    b.or_acc = 0;
    ++b.gen;
    return g;
  }
  Fiber* f = c.cur;
  f->waiting = &b;
  f->gen_seen = g;
  swapcontext(&f->ctx, &c.sched);
  return g;
}

inline unsigned char* xchg_slot(unsigned warp, uint64_t gen, unsigned lane) {
  return &g_cta->xchg[((warp * 2 + (gen & 1)) * 32 + lane) * 8];
}

inline void entry() {
  g_cta->body();
  g_cta->cur->done = true;  // returns to uc_link, the scheduler
}

// Fiber stacks, reused by every CTA.
constexpr size_t kStackBytes = 256 * 1024;
inline char* stack(unsigned i) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (pool.size() <= i) pool.emplace_back(new char[kStackBytes]);
  return pool[i].get();
}

// Apart from run_cta: getcontext returns twice, which would clobber run_cta's locals.
[[gnu::noinline]] inline void init_fiber(Fiber& f, unsigned t, ucontext_t* link) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack(t);
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = link;
  makecontext(&f.ctx, entry, 0);
}

inline std::string run_cta(dim3 grid, dim3 block, dim3 bid, const std::function<void()>& body) {
  Cta c;
  const unsigned n = block.x, nw = n / 32;
  c.fibers.resize(n);
  c.sync.size = n;
  c.warp.resize(nw);
  for (auto& w : c.warp) w.size = 32;
  c.xchg.assign(nw * 2 * 32 * 8, 0);
  c.body = body;
  g_cta = &c;
  for (unsigned t = 0; t < n; ++t) init_fiber(c.fibers[t], t, &c.sched);
  blockIdx = bid;
  blockDim = block;
  gridDim = grid;
  for (bool forward = true;; forward = !forward) {
    bool left = false, ran = false;
    for (unsigned k = 0; k < n; ++k) {
      const unsigned t = forward ? k : n - 1 - k;
      Fiber& f = c.fibers[t];
      if (f.done) continue;
      left = true;
      if (f.waiting && f.waiting->gen == f.gen_seen) continue;  // still blocked
      f.waiting = nullptr;
      c.cur = &f;
      threadIdx = dim3(t);
      swapcontext(&c.sched, &f.ctx);
      ran = true;
    }
    if (!left) break;
    if (!ran) {  // everyone left waits on a barrier that the finished threads never reach
      fail("deadlock: a barrier not reached by every thread of the CTA or warp");
      break;
    }
  }
  g_cta = nullptr;
  return c.error;
}

}  // namespace emu

inline void __syncthreads() { emu::arrive(emu::g_cta->sync, emu::kSync); }

inline int __syncthreads_or(int p) {
  emu::Barrier& b = emu::g_cta->sync;
  b.or_acc |= p ? 1 : 0;
  emu::arrive(b, emu::kSyncOr);
  return b.or_result;  // stays until the next phase completes, which needs this thread
}

namespace emu {
// All 32 lanes publish v, wait for each other, and read what lane `src(lane)` published.
// Slots alternate by phase parity: a lane can be at most one phase ahead of a reader.
template <typename T, typename F>
T exchange(unsigned mask, const T& v, F read) {
  static_assert(sizeof(T) <= 8, "exchange of at most 8 bytes");
  if (mask != 0xffffffffu) fail("only full-warp masks are modelled");
  const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
  Barrier& b = g_cta->warp[w];
  std::memcpy(xchg_slot(w, b.gen, l), &v, sizeof(T));
  const uint64_t g = arrive(b, kWarp);
  return read(w, g);
}

// The shuffles: each lane l gets the value lane src(l) published.
template <typename T, typename Src>
T shuffle(unsigned mask, const T& v, Src src) {
  const unsigned from = src(threadIdx.x % 32);
  return exchange(mask, v, [from](unsigned w, uint64_t g) {
    T r;
    std::memcpy(&r, xchg_slot(w, g, from), sizeof(T));
    return r;
  });
}
}  // namespace emu

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
  return emu::shuffle(mask, v, [o](unsigned l) { return l ^ static_cast<unsigned>(o); });
}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src) {
  return emu::shuffle(mask, v, [src](unsigned) { return static_cast<unsigned>(src) & 31u; });
}

// Lanes below `delta` keep their own value, as on the GPU.
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
  return emu::shuffle(mask, v, [delta](unsigned l) { return l >= delta ? l - delta : l; });
}

inline unsigned __ballot_sync(unsigned mask, int p) {
  const int flag = p ? 1 : 0;
  return emu::exchange(mask, flag, [](unsigned w, uint64_t g) {
    unsigned r = 0;
    for (unsigned i = 0; i < 32; ++i) {
      int f;
      std::memcpy(&f, emu::xchg_slot(w, g, i), sizeof(int));
      r |= static_cast<unsigned>(f) << i;
    }
    return r;
  });
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }

// Integer atomics: one thread runs at a time, so a plain read-modify-write is atomic here
// (which is all a GPU promises: the sums are exact whatever the order).
template <typename T>  // int and unsigned long long, the overloads the kernels use
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

namespace emu {
// What cudaGetLastError would report for this configuration, or "". Only one-dimensional
// blocks of whole warps are modelled.
inline std::string check_config(dim3 grid, dim3 block) {
  if (grid.x < 1 || grid.x > 2147483647u || grid.y < 1 || grid.y > 65535 || grid.z < 1 ||
      grid.z > 65535)
    return "invalid grid";
  if (block.x < 32 || block.x > 1024 || block.x % 32 != 0 || block.y != 1 || block.z != 1)
    return "block not modelled (1-D, whole warps, at most 1024 threads)";
  return std::string();
}

// Runs kernel<<<grid, block>>>(args...) to completion; "" or the error.
template <typename... P, typename... Args>
std::string launch(void (*kernel)(P...), dim3 grid, dim3 block, Args... args) {
  std::string err = check_config(grid, block);
  if (!err.empty()) return err;
  const std::function<void()> body = [&]() { kernel(args...); };
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        err = run_cta(grid, block, dim3(bx, by, bz), body);
        if (!err.empty()) return err;
      }
  return std::string();
}
}  // namespace emu
