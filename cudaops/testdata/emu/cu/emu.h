// A CPU emulation of the CUDA execution model, just enough for bn.cu: every
// CUDA thread of a block is a ucontext fiber; __syncthreads and warp shuffles
// are barriers; blocks run one after another (so __shared__ can be static).
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <ucontext.h>
using std::fma;
using std::sqrt;

struct emu_dim3 { unsigned x, y, z; };
struct emu_fiber {
  ucontext_t ctx;
  emu_dim3 tidx;
  int waiting; // barrier id waited on, -1 none
  bool done;
  char *stack;
};
extern emu_fiber *emu_cur;
extern emu_dim3 emu_blockIdx, emu_blockDim, emu_gridDim;
void emu_barrier(int id, int count);
double emu_shfl_down(double v, int off);

#define threadIdx (emu_cur->tidx)
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
inline void __syncthreads() { emu_barrier(0, -1); }
inline double __shfl_down_sync(unsigned, double v, int off) { return emu_shfl_down(v, off); }
