#include "emu.h"
#include <functional>
#include <map>
#include <string>
#include <utility>

emu_fiber *emu_cur;
emu_dim3 emu_blockIdx, emu_blockDim, emu_gridDim;

static std::vector<emu_fiber> fibers;
static ucontext_t sched;
static int nthreads;
// barrier 0: block; barrier 1+w: warp w
static std::vector<int> arrived;
static double warpbuf[1024];

void emu_barrier(int id, int count) {
  if (count < 0) count = nthreads;
  emu_fiber *me = emu_cur;
  if (++arrived[id] == count) {
    arrived[id] = 0;
    for (auto &f : fibers) if (f.waiting == id) f.waiting = -1;
    // the last arriver continues, but first lets the others pass: yield
    me->waiting = -1;
  } else {
    me->waiting = id;
  }
  swapcontext(&me->ctx, &sched);
  emu_cur = me;
}

double emu_shfl_down(double v, int off) {
  int tid = emu_cur->tidx.x + emu_cur->tidx.y * emu_blockDim.x;
  int lane = tid & 31, w = tid >> 5;
  warpbuf[tid] = v;
  emu_barrier(1 + w, 32);
  double r = lane + off < 32 ? warpbuf[tid + off] : v;
  emu_barrier(1 + w, 32);
  return r;
}

static std::function<void()> body;
static void trampoline() {
  body();
  emu_cur->done = true;
  swapcontext(&emu_cur->ctx, &sched);
}

static void run_block() {
  for (int i = 0; i < nthreads; ++i) {
    emu_fiber &f = fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = 1 << 16;
    f.ctx.uc_link = nullptr;
    f.tidx = {(unsigned)(i % emu_blockDim.x), (unsigned)(i / emu_blockDim.x), 0};
    f.waiting = -1;
    f.done = false;
    makecontext(&f.ctx, trampoline, 0);
  }
  for (;;) {
    bool any = false, progress = false;
    for (int i = 0; i < nthreads; ++i) {
      emu_fiber &f = fibers[i];
      if (f.done) continue;
      any = true;
      if (f.waiting >= 0) continue;
      progress = true;
      emu_cur = &f;
      swapcontext(&sched, &f.ctx);
    }
    if (!any) return;
    if (!progress) {
      fprintf(stderr, "emu: deadlock in block %u (threads waiting at barriers)\n", emu_blockIdx.x);
      abort();
    }
  }
}

template <typename... A, size_t... I>
static void invoke(void (*f)(A...), void **args, std::index_sequence<I...>) {
  f(*(A *)args[I]...);
}
template <typename... A> static std::function<void(void **)> wrap(void (*f)(A...)) {
  return [f](void **args) { invoke(f, args, std::index_sequence_for<A...>{}); };
}

#ifndef BN_CU
#define BN_CU "../../../bn.cu"
#endif
#include BN_CU

static std::map<std::string, std::function<void(void **)>> table = {
#define K(n) {#n, wrap(n)},
    K(bn_stats_plane_f32) K(bn_stats_row_f32) K(bn_sums_plane_f32) K(bn_sums_row_f32) K(bn_apply_plane_f32)
    K(bn_apply_row_f32) K(bn_merge_stats_f32) K(bn_merge_sums_f32) K(bn_finalize_f32) K(bn_bwd_coeffs_f32)
    K(bn_stats_plane_f64) K(bn_stats_row_f64) K(bn_sums_plane_f64) K(bn_sums_row_f64) K(bn_apply_plane_f64)
    K(bn_apply_row_f64) K(bn_merge_stats_f64) K(bn_merge_sums_f64) K(bn_finalize_f64) K(bn_bwd_coeffs_f64)
    K(bn_apply_relu_plane_f32) K(bn_apply_relu_row_f32) K(bn_sums_relu_plane_f32) K(bn_sums_relu_row_f32)
    K(bn_apply_relu_plane_f64) K(bn_apply_relu_row_f64) K(bn_sums_relu_plane_f64) K(bn_sums_relu_row_f64)
    K(bn_update_running) K(bn_merge_moments)
};

extern "C" int emu_has(const char *name) { return table.count(name) ? 1 : 0; }

extern "C" int emu_launch(const char *name, int gx, int gy, int gz, int bx, int by, int bz, void **args) {
  auto it = table.find(name);
  if (it == table.end()) return 500;
  if (gy != 1 || gz != 1 || bz != 1 || bx * by > 1024 || bx * by <= 0 || gx <= 0) return 1;
  emu_blockDim = {(unsigned)bx, (unsigned)by, 1};
  emu_gridDim = {(unsigned)gx, 1, 1};
  nthreads = bx * by;
  if ((int)fibers.size() < nthreads) {
    size_t old = fibers.size();
    fibers.resize(nthreads);
    for (size_t i = old; i < fibers.size(); ++i) fibers[i].stack = (char *)malloc(1 << 16);
  }
  arrived.assign(1 + 32, 0);
  auto fn = it->second;
  for (int b = 0; b < gx; ++b) {
    emu_blockIdx = {(unsigned)b, 0, 0};
    body = [&]() { fn(args); };
    run_block();
  }
  return 0;
}
