// bn.cu — the CUDA kernels of package cudaops (github.com/gorgonia-bn/bn).
//
// Every variant of batch normalization is one pipeline (see DESIGN.md §1):
//
//   forward:  x ─▶ partial moments per (chunk, channel) ─▶ Chan merge per (segment, channel)
//               ─▶ mean, invstd ─▶ y = (x − mean)·scale + shift
//   backward: (x, dy) ─▶ partial Σdy, Σdy·(x−mean) ─▶ sum per (segment, channel)
//               ─▶ dx = a·dy + b·(x − mean) + c
//
// The tensor is N×C×S in row-major (NCHW) order. Samples are partitioned
// into segments (ghost batches, per-sample domain ids); the host splits every
// run of consecutive samples of one segment into chunks, so a chunk never
// spans two segments and its segment is known per block.
//
// Two decompositions, chosen by the host from S:
//   plane (S ≥ 32): block (channel c, chunk q); a chunk is a range [i0, i1)
//       of the flattened (sample, spatial) index i = n·S + s of one channel;
//       the 256 threads read consecutive i, so every warp load is one or two
//       contiguous runs of a plane.
//   row (S < 32): block (column tile, chunk q); a chunk is a range of samples
//       (rows of length L = C·S); thread (tx, ty) owns column j = tile·32+tx
//       and reads rows ty, ty+8, …: every warp load is 32 consecutive elements.
//       Partials are kept per column (W = S partials per channel).
//
// All accumulation is in float64 whatever the element type. Moments are
// (n, mean, M2) triples of doubles, merged with Chan et al.'s rule; each
// thread folds groups of GROUP loaded values (group mean and M2 by two passes
// over registers, then one Chan merge: a Welford update per group), blocks
// merge their threads in a fixed shuffle/shared-memory tree, and a second
// small kernel merges the partials of every (segment, channel) in a fixed
// order. No atomics: results are bitwise reproducible for a given layout.
//
// Every kernel parameter is 8 bytes wide (pointers, long long, double): the
// Go launcher passes each as a 64-bit slot.
//
// Regenerate the PTX with `go generate` in this directory (see doc.go).

typedef long long i64;

#define FULL_MASK 0xffffffffu
#define PLANE_THREADS 256
#define ROW_X 32
#define ROW_Y 8
#define GROUP 8

// ---------------------------------------------------------------- moments

struct Mom {
    double n, mean, m2;
};

__device__ __forceinline__ Mom mom_make(double n, double mean, double m2) {
    Mom m;
    m.n = n;
    m.mean = mean;
    m.m2 = m2;
    return m;
}

// mom_merge is Chan, Golub and LeVeque's rule; an empty operand returns the
// other one unchanged (the CPU kernels' Moments.Merge).
__device__ __forceinline__ Mom mom_merge(Mom a, Mom b) {
    if (b.n == 0.0) return a;
    if (a.n == 0.0) return b;
    double n = a.n + b.n;
    double d = b.mean - a.mean;
    double r = b.n / n;
    return mom_make(n, a.mean + d * r, a.m2 + b.m2 + d * d * (a.n * r));
}

// fold_group folds GROUP values into acc: their mean and M2 by two passes
// over registers, then one Chan merge.
__device__ __forceinline__ void fold_group(Mom &acc, const double (&v)[GROUP]) {
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < GROUP; ++j) s += v[j];
    double m = s * (1.0 / GROUP);  // exact: GROUP is a power of two
    double q = 0.0;
#pragma unroll
    for (int j = 0; j < GROUP; ++j) {
        double d = v[j] - m;
        q = fma(d, d, q);
    }
    acc = mom_merge(acc, mom_make((double)GROUP, m, q));
}

// fold_one is Welford's update with one value.
__device__ __forceinline__ void fold_one(Mom &acc, double v) {
    double n = acc.n + 1.0;
    double d = v - acc.mean;
    acc.mean += d / n;
    acc.m2 += d * (v - acc.mean);
    acc.n = n;
}

__device__ __forceinline__ Mom shfl_down_mom(Mom a, int off) {
    return mom_make(__shfl_down_sync(FULL_MASK, a.n, off),
                    __shfl_down_sync(FULL_MASK, a.mean, off),
                    __shfl_down_sync(FULL_MASK, a.m2, off));
}

__device__ __forceinline__ Mom warp_reduce_mom(Mom a) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a = mom_merge(a, shfl_down_mom(a, off));
    return a;
}

__device__ __forceinline__ void warp_reduce_sum2(double &u, double &v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        u += __shfl_down_sync(FULL_MASK, u, off);
        v += __shfl_down_sync(FULL_MASK, v, off);
    }
}

// block_reduce_mom merges the moments of a 1-D block (≤ 1024 threads, a
// multiple of 32); the result is valid in thread 0.
__device__ __forceinline__ Mom block_reduce_mom(Mom a) {
    __shared__ double sh[3 * 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nw = blockDim.x >> 5;
    a = warp_reduce_mom(a);
    if (lane == 0) {
        sh[3 * warp] = a.n;
        sh[3 * warp + 1] = a.mean;
        sh[3 * warp + 2] = a.m2;
    }
    __syncthreads();
    if (warp == 0) {
        a = lane < nw ? mom_make(sh[3 * lane], sh[3 * lane + 1], sh[3 * lane + 2]) : mom_make(0, 0, 0);
        a = warp_reduce_mom(a);
    }
    return a;
}

// block_reduce_sum2 sums two doubles over a 1-D block; valid in thread 0.
__device__ __forceinline__ void block_reduce_sum2(double &u, double &v) {
    __shared__ double sh[2 * 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nw = blockDim.x >> 5;
    warp_reduce_sum2(u, v);
    if (lane == 0) {
        sh[2 * warp] = u;
        sh[2 * warp + 1] = v;
    }
    __syncthreads();
    if (warp == 0) {
        u = lane < nw ? sh[2 * lane] : 0.0;
        v = lane < nw ? sh[2 * lane + 1] : 0.0;
        warp_reduce_sum2(u, v);
    }
}

// ------------------------------------------------------------ plane walk
//
// A thread of a plane block visits i = i0+tid, i0+tid+B, … < i1 of channel c:
// the element at (n·C + c)·S + s with n = i/S, s = i%S. It advances with one
// compare instead of a division per element.

struct PlaneWalk {
    i64 off;   // element offset of the current position
    i64 step;  // offset increment for +B without wrap
    i64 wrap;  // extra increment when s wraps past S
    int s, ds, S;
    int m;     // number of elements left for this thread

    __device__ __forceinline__ void init(i64 i0, i64 len, i64 c, i64 C, i64 S64) {
        const int B = blockDim.x, tid = threadIdx.x;
        S = (int)S64;
        const i64 CS = C * S64;
        const i64 i = i0 + tid;
        const i64 n = i / S64;
        s = (int)(i - n * S64);
        off = n * CS + c * S64 + s;
        const int dn = B / S;
        ds = B - dn * S;
        step = (i64)dn * CS + ds;
        wrap = CS - S64;
        m = tid < len ? (int)((len - tid + B - 1) / B) : 0;
    }
    __device__ __forceinline__ void next() {
        s += ds;
        off += step;
        if (s >= S) {
            s -= S;
            off += wrap;
        }
    }
};

// ---------------------------------------------------------------- stats

template <typename T>
__device__ __forceinline__ void plane_stats(const T *__restrict__ x, const i64 *__restrict__ tab,
                                            double *__restrict__ part, i64 C, i64 S) {
    const i64 c = blockIdx.x % C, q = blockIdx.x / C;
    const i64 i0 = tab[3 * q], len = tab[3 * q + 1] - i0;
    PlaneWalk w;
    w.init(i0, len, c, C, S);
    Mom acc = mom_make(0, 0, 0);
    for (; w.m >= GROUP; w.m -= GROUP) {
        double v[GROUP];
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
            v[j] = (double)x[w.off];
            w.next();
        }
        fold_group(acc, v);
    }
    for (; w.m > 0; --w.m) {
        fold_one(acc, (double)x[w.off]);
        w.next();
    }
    acc = block_reduce_mom(acc);
    if (threadIdx.x == 0) {
        double *o = part + 3 * (q * C + c);
        o[0] = acc.n;
        o[1] = acc.mean;
        o[2] = acc.m2;
    }
}

template <typename T>
__device__ __forceinline__ void row_stats(const T *__restrict__ x, const i64 *__restrict__ tab,
                                          double *__restrict__ part, i64 C, i64 S, i64 ntiles) {
    __shared__ double sh[3][ROW_Y][ROW_X];
    const i64 L = C * S;
    const i64 tile = blockIdx.x % ntiles, q = blockIdx.x / ntiles;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 j = tile * ROW_X + tx;
    const i64 r0 = tab[3 * q], len = tab[3 * q + 1] - r0;
    Mom acc = mom_make(0, 0, 0);
    if (j < L && ty < len) {
        const i64 step = (i64)ROW_Y * L;
        const T *p = x + (r0 + ty) * L + j;
        int m = (int)((len - ty + ROW_Y - 1) / ROW_Y);
        for (; m >= GROUP; m -= GROUP) {
            double v[GROUP];
#pragma unroll
            for (int k = 0; k < GROUP; ++k) v[k] = (double)p[k * step];
            p += GROUP * step;
            fold_group(acc, v);
        }
        for (; m > 0; --m) {
            fold_one(acc, (double)*p);
            p += step;
        }
    }
    sh[0][ty][tx] = acc.n;
    sh[1][ty][tx] = acc.mean;
    sh[2][ty][tx] = acc.m2;
    __syncthreads();
    if (ty == 0 && j < L) {
        Mom r = mom_make(sh[0][0][tx], sh[1][0][tx], sh[2][0][tx]);
#pragma unroll
        for (int k = 1; k < ROW_Y; ++k) r = mom_merge(r, mom_make(sh[0][k][tx], sh[1][k][tx], sh[2][k][tx]));
        double *o = part + 3 * (q * L + j);
        o[0] = r.n;
        o[1] = r.mean;
        o[2] = r.m2;
    }
}

// ------------------------------------------------------- backward sums
//
// With MASK (BN fused with a ReLU, bn_sums_relu_*), the gradient summed is
// g = dy where the forward's output y > 0, else 0, and g is also written
// out (the gradient of the residual, and what the dx pass reads).

// grad_at returns dy[o], or with MASK the masked g[o], which it stores.
template <typename T, bool MASK>
__device__ __forceinline__ double grad_at(const T *dy, const T *y, T *g, i64 o) {
    if (!MASK) return (double)dy[o];
    const T v = y[o] > (T)0 ? dy[o] : (T)0;
    g[o] = v;
    return (double)v;
}

template <typename T, bool MASK = false>
__device__ __forceinline__ void plane_sums(const T *__restrict__ x, const T *__restrict__ dy,
                                           const i64 *__restrict__ tab, const double *__restrict__ mean,
                                           double *__restrict__ part, i64 C, i64 S, const T *__restrict__ y = 0,
                                           T *__restrict__ g = 0) {
    const i64 c = blockIdx.x % C, q = blockIdx.x / C;
    const i64 i0 = tab[3 * q], len = tab[3 * q + 1] - i0, seg = tab[3 * q + 2];
    const double mu = mean[seg * C + c];
    PlaneWalk w;
    w.init(i0, len, c, C, S);
    double s1 = 0.0, s2 = 0.0;
    for (; w.m >= GROUP; w.m -= GROUP) {
        double xv[GROUP], gv[GROUP];
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
            xv[j] = (double)x[w.off];
            gv[j] = grad_at<T, MASK>(dy, y, g, w.off);
            w.next();
        }
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
            s1 += gv[j];
            s2 = fma(gv[j], xv[j] - mu, s2);
        }
    }
    for (; w.m > 0; --w.m) {
        const double gd = grad_at<T, MASK>(dy, y, g, w.off);
        s1 += gd;
        s2 = fma(gd, (double)x[w.off] - mu, s2);
        w.next();
    }
    block_reduce_sum2(s1, s2);
    if (threadIdx.x == 0) {
        double *o = part + 3 * (q * C + c);
        o[0] = s1;
        o[1] = s2;
        o[2] = 0.0;
    }
}

template <typename T, bool MASK = false>
__device__ __forceinline__ void row_sums(const T *__restrict__ x, const T *__restrict__ dy,
                                         const i64 *__restrict__ tab, const double *__restrict__ mean,
                                         double *__restrict__ part, i64 C, i64 S, i64 ntiles,
                                         const T *__restrict__ y = 0, T *__restrict__ g = 0) {
    __shared__ double sh[2][ROW_Y][ROW_X];
    const i64 L = C * S;
    const i64 tile = blockIdx.x % ntiles, q = blockIdx.x / ntiles;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 j = tile * ROW_X + tx;
    const i64 r0 = tab[3 * q], len = tab[3 * q + 1] - r0, seg = tab[3 * q + 2];
    double s1 = 0.0, s2 = 0.0;
    if (j < L && ty < len) {
        const double mu = mean[seg * C + j / S];
        const i64 step = (i64)ROW_Y * L;
        const i64 o0 = (r0 + ty) * L + j;
        i64 o = o0;
        int m = (int)((len - ty + ROW_Y - 1) / ROW_Y);
        for (; m >= GROUP; m -= GROUP) {
            double xv[GROUP], gv[GROUP];
#pragma unroll
            for (int k = 0; k < GROUP; ++k) {
                xv[k] = (double)x[o + k * step];
                gv[k] = grad_at<T, MASK>(dy, y, g, o + k * step);
            }
            o += GROUP * step;
#pragma unroll
            for (int k = 0; k < GROUP; ++k) {
                s1 += gv[k];
                s2 = fma(gv[k], xv[k] - mu, s2);
            }
        }
        for (; m > 0; --m) {
            const double gd = grad_at<T, MASK>(dy, y, g, o);
            s1 += gd;
            s2 = fma(gd, (double)x[o] - mu, s2);
            o += step;
        }
    }
    sh[0][ty][tx] = s1;
    sh[1][ty][tx] = s2;
    __syncthreads();
    if (ty == 0 && j < L) {
        double u = sh[0][0][tx], v = sh[1][0][tx];
#pragma unroll
        for (int k = 1; k < ROW_Y; ++k) {
            u += sh[0][k][tx];
            v += sh[1][k][tx];
        }
        double *o = part + 3 * (q * L + j);
        o[0] = u;
        o[1] = v;
        o[2] = 0.0;
    }
}

// ---------------------------------------------------------------- apply
//
// out = a·dy + b·(x − mean) + c with the coefficients of the element's
// (segment, channel); without dy (forward): out = b·(x − mean) + c.
// out may alias x or dy: each element is read and written by one thread.
// With RELU (BN fused with a ReLU, bn_apply_relu_*): a = 1 (dy is the
// residual z, if any) and out = max(0, ·), taken after the rounding to T
// (NaN and −0 stay, as on the CPU).

template <typename T, bool RELU>
__device__ __forceinline__ T act(double r) {
    T t = (T)r;
    if (RELU && t < (T)0) t = (T)0;
    return t;
}

template <typename T, bool BWD, bool RELU>
__device__ __forceinline__ void plane_apply_impl(const T *x, const T *dy, T *out, i64 i0, i64 len, i64 c, i64 C,
                                                 i64 S, double mu, double A, double Bc, double Cc) {
    PlaneWalk w;
    w.init(i0, len, c, C, S);
    for (; w.m >= GROUP; w.m -= GROUP) {
        i64 off[GROUP];
        double xv[GROUP], gv[GROUP];
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
            off[j] = w.off;
            xv[j] = (double)x[w.off];
            if (BWD) gv[j] = (double)dy[w.off];
            w.next();
        }
#pragma unroll
        for (int j = 0; j < GROUP; ++j) {
            double r = BWD ? fma(A, gv[j], fma(xv[j] - mu, Bc, Cc)) : fma(xv[j] - mu, Bc, Cc);
            out[off[j]] = act<T, RELU>(r);
        }
    }
    for (; w.m > 0; --w.m) {
        const double xv = (double)x[w.off];
        double r = fma(xv - mu, Bc, Cc);
        if (BWD) r = fma(A, (double)dy[w.off], r);
        out[w.off] = act<T, RELU>(r);
        w.next();
    }
}

template <typename T, bool RELU = false>
__device__ __forceinline__ void plane_apply(const T *x, const T *dy, T *out, const i64 *__restrict__ tab,
                                            i64 C, i64 S, const double *__restrict__ mean,
                                            const double *__restrict__ ca, const double *__restrict__ cb,
                                            const double *__restrict__ cc) {
    const i64 c = blockIdx.x % C, q = blockIdx.x / C;
    const i64 i0 = tab[3 * q], len = tab[3 * q + 1] - i0, seg = tab[3 * q + 2];
    const i64 k = seg * C + c;
    const double mu = mean[k], Bc = cb[k], Cc = cc[k];
    if (dy != 0)
        plane_apply_impl<T, true, RELU>(x, dy, out, i0, len, c, C, S, mu, RELU ? 1.0 : ca[k], Bc, Cc);
    else
        plane_apply_impl<T, false, RELU>(x, dy, out, i0, len, c, C, S, mu, 0.0, Bc, Cc);
}

template <typename T, bool BWD, bool RELU>
__device__ __forceinline__ void row_apply_impl(const T *x, const T *dy, T *out, i64 o0, i64 step, int m,
                                               double mu, double A, double Bc, double Cc) {
    i64 o = o0;
    for (; m >= GROUP; m -= GROUP) {
        double xv[GROUP], gv[GROUP];
#pragma unroll
        for (int k = 0; k < GROUP; ++k) {
            xv[k] = (double)x[o + k * step];
            if (BWD) gv[k] = (double)dy[o + k * step];
        }
#pragma unroll
        for (int k = 0; k < GROUP; ++k) {
            double r = BWD ? fma(A, gv[k], fma(xv[k] - mu, Bc, Cc)) : fma(xv[k] - mu, Bc, Cc);
            out[o + k * step] = act<T, RELU>(r);
        }
        o += GROUP * step;
    }
    for (; m > 0; --m) {
        double r = fma((double)x[o] - mu, Bc, Cc);
        if (BWD) r = fma(A, (double)dy[o], r);
        out[o] = act<T, RELU>(r);
        o += step;
    }
}

template <typename T, bool RELU = false>
__device__ __forceinline__ void row_apply(const T *x, const T *dy, T *out, const i64 *__restrict__ tab, i64 C,
                                          i64 S, i64 ntiles, const double *__restrict__ mean,
                                          const double *__restrict__ ca, const double *__restrict__ cb,
                                          const double *__restrict__ cc) {
    const i64 L = C * S;
    const i64 tile = blockIdx.x % ntiles, q = blockIdx.x / ntiles;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 j = tile * ROW_X + tx;
    const i64 r0 = tab[3 * q], len = tab[3 * q + 1] - r0, seg = tab[3 * q + 2];
    if (j >= L || ty >= len) return;
    const i64 k = seg * C + j / S;
    const double mu = mean[k], Bc = cb[k], Cc = cc[k];
    const i64 step = (i64)ROW_Y * L;
    const i64 o0 = (r0 + ty) * L + j;
    const int m = (int)((len - ty + ROW_Y - 1) / ROW_Y);
    if (dy != 0)
        row_apply_impl<T, true, RELU>(x, dy, out, o0, step, m, mu, RELU ? 1.0 : ca[k], Bc, Cc);
    else
        row_apply_impl<T, false, RELU>(x, dy, out, o0, step, m, mu, 0.0, Bc, Cc);
}

// ----------------------------------------------------- per-channel steps

// finalize_one writes mean, invstd = 1/√(M2/n + eps), scale = γ·invstd and
// shift = β for entry k = seg·C + c (each output optional).
template <typename T>
__device__ __forceinline__ void finalize_one(Mom a, i64 k, i64 c, const T *gamma, const T *beta, double eps,
                                             double *mean, double *invstd, double *scale, double *shift) {
    const double is = 1.0 / sqrt(a.m2 / a.n + eps);
    if (mean) mean[k] = a.mean;
    if (invstd) invstd[k] = is;
    if (scale) scale[k] = (gamma ? (double)gamma[c] : 1.0) * is;
    if (shift) shift[k] = beta ? (double)beta[c] : 0.0;
}

// running_one: r ← (1−w)·r + w·stat, unbiased variance; untouched if n ≤ 1.
__device__ __forceinline__ void running_one(Mom a, i64 k, double *rmean, double *rvar, double w) {
    if (a.n <= 1.0) return;
    rmean[k] = (1.0 - w) * rmean[k] + w * a.mean;
    rvar[k] = (1.0 - w) * rvar[k] + w * (a.m2 / (a.n - 1.0));
}

// coeffs_one: a = γ·invstd, b = −a·invstd²·Σdy(x−μ)/n, c = −a·Σdy/n.
template <typename T>
__device__ __forceinline__ void coeffs_one(double s1, double s2, double n, double is, i64 k, i64 c,
                                           const T *gamma, double *ca, double *cb, double *cc) {
    const double A = (gamma ? (double)gamma[c] : 1.0) * is;
    ca[k] = A;
    cb[k] = -A * is * is * s2 / n;
    cc[k] = -A * s1 / n;
}

// merge_stats: one warp per channel; for every segment, lane l merges
// partials l, l+32, … in order, then a fixed shuffle tree. Optionally
// finalizes and updates running statistics.
template <typename T>
__device__ __forceinline__ void merge_stats(const double *__restrict__ part, const i64 *__restrict__ seg_start,
                                            i64 C, i64 W, i64 nseg, double *mom, const T *gamma,
                                            const T *beta, double eps, double *mean, double *invstd,
                                            double *scale, double *shift, double *rmean, double *rvar,
                                            double w) {
    const i64 c = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= C) return;  // uniform per warp
    for (i64 g = 0; g < nseg; ++g) {
        const i64 qa = seg_start[g], items = (seg_start[g + 1] - qa) * W;
        Mom a = mom_make(0, 0, 0);
        for (i64 t = lane; t < items; t += 32) {
            const i64 dq = t / W, wi = t - dq * W;
            const double *p = part + 3 * (((qa + dq) * C + c) * W + wi);
            a = mom_merge(a, mom_make(p[0], p[1], p[2]));
        }
        a = warp_reduce_mom(a);
        if (lane == 0) {
            const i64 k = g * C + c;
            mom[3 * k] = a.n;
            mom[3 * k + 1] = a.mean;
            mom[3 * k + 2] = a.m2;
            if (mean || invstd || scale || shift) finalize_one<T>(a, k, c, gamma, beta, eps, mean, invstd, scale, shift);
            if (rmean) running_one(a, k, rmean, rvar, w);
        }
    }
}

// merge_sums: one warp per channel, like merge_stats. Writes the local
// (Σdy, Σdy·(x−μ)) of every (segment, channel); optionally dγ = Σ_seg
// invstd·Σdy(x−μ) and dβ = Σ_seg Σdy over non-empty segments, and the dx
// coefficients from these local sums and the counts of mom.
template <typename T>
__device__ __forceinline__ void merge_sums(const double *__restrict__ part, const i64 *__restrict__ seg_start,
                                           i64 C, i64 W, i64 nseg, double *sums, const double *invstd,
                                           T *dgamma, T *dbeta, const double *mom, const T *gamma, double *ca,
                                           double *cb, double *cc) {
    const i64 c = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= C) return;
    double dg = 0.0, db = 0.0;
    for (i64 g = 0; g < nseg; ++g) {
        const i64 qa = seg_start[g], items = (seg_start[g + 1] - qa) * W;
        double u = 0.0, v = 0.0;
        for (i64 t = lane; t < items; t += 32) {
            const i64 dq = t / W, wi = t - dq * W;
            const double *p = part + 3 * (((qa + dq) * C + c) * W + wi);
            u += p[0];
            v += p[1];
        }
        warp_reduce_sum2(u, v);
        if (lane == 0) {
            const i64 k = g * C + c;
            sums[2 * k] = u;
            sums[2 * k + 1] = v;
            if (items > 0) {
                if (dgamma) dg += invstd[k] * v;
                db += u;
            }
            if (ca) coeffs_one<T>(u, v, mom[3 * k], invstd[k], k, c, gamma, ca, cb, cc);
        }
    }
    if (lane == 0) {
        if (dgamma) dgamma[c] = (T)dg;
        if (dbeta) dbeta[c] = (T)db;
    }
}

// ------------------------------------------------------- entry points

#define BN_TYPED(T, SUF)                                                                                         \
    extern "C" __global__ void __launch_bounds__(PLANE_THREADS)                                                  \
        bn_stats_plane_##SUF(const T *__restrict__ x, const i64 *__restrict__ tab, double *__restrict__ part,    \
                             i64 C, i64 S) {                                                                     \
        plane_stats<T>(x, tab, part, C, S);                                                                      \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ROW_X *ROW_Y)                                                   \
        bn_stats_row_##SUF(const T *__restrict__ x, const i64 *__restrict__ tab, double *__restrict__ part,      \
                           i64 C, i64 S, i64 ntiles) {                                                           \
        row_stats<T>(x, tab, part, C, S, ntiles);                                                                \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(PLANE_THREADS)                                                  \
        bn_sums_plane_##SUF(const T *__restrict__ x, const T *__restrict__ dy, const i64 *__restrict__ tab,      \
                            const double *__restrict__ mean, double *__restrict__ part, i64 C, i64 S) {          \
        plane_sums<T>(x, dy, tab, mean, part, C, S);                                                             \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ROW_X *ROW_Y)                                                   \
        bn_sums_row_##SUF(const T *__restrict__ x, const T *__restrict__ dy, const i64 *__restrict__ tab,        \
                          const double *__restrict__ mean, double *__restrict__ part, i64 C, i64 S,              \
                          i64 ntiles) {                                                                          \
        row_sums<T>(x, dy, tab, mean, part, C, S, ntiles);                                                       \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(PLANE_THREADS)                                                  \
        bn_apply_plane_##SUF(const T *x, const T *dy, T *out, const i64 *__restrict__ tab, i64 C, i64 S,         \
                             const double *__restrict__ mean, const double *__restrict__ ca,                     \
                             const double *__restrict__ cb, const double *__restrict__ cc) {                     \
        plane_apply<T>(x, dy, out, tab, C, S, mean, ca, cb, cc);                                                 \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ROW_X *ROW_Y)                                                   \
        bn_apply_row_##SUF(const T *x, const T *dy, T *out, const i64 *__restrict__ tab, i64 C, i64 S,           \
                           i64 ntiles, const double *__restrict__ mean, const double *__restrict__ ca,           \
                           const double *__restrict__ cb, const double *__restrict__ cc) {                       \
        row_apply<T>(x, dy, out, tab, C, S, ntiles, mean, ca, cb, cc);                                           \
    }                                                                                                            \
    extern "C" __global__ void bn_merge_stats_##SUF(                                                             \
        const double *__restrict__ part, const i64 *__restrict__ seg_start, i64 C, i64 W, i64 nseg, double *mom, \
        const T *gamma, const T *beta, double eps, double *mean, double *invstd, double *scale, double *shift,   \
        double *rmean, double *rvar, double w) {                                                                 \
        merge_stats<T>(part, seg_start, C, W, nseg, mom, gamma, beta, eps, mean, invstd, scale, shift, rmean,   \
                       rvar, w);                                                                                 \
    }                                                                                                            \
    extern "C" __global__ void bn_merge_sums_##SUF(const double *__restrict__ part,                              \
                                                   const i64 *__restrict__ seg_start, i64 C, i64 W, i64 nseg,    \
                                                   double *sums, const double *invstd, T *dgamma, T *dbeta,      \
                                                   const double *mom, const T *gamma, double *ca, double *cb,    \
                                                   double *cc) {                                                 \
        merge_sums<T>(part, seg_start, C, W, nseg, sums, invstd, dgamma, dbeta, mom, gamma, ca, cb, cc);        \
    }                                                                                                            \
    extern "C" __global__ void bn_finalize_##SUF(const double *__restrict__ mom, i64 K, i64 C, const T *gamma,   \
                                                 const T *beta, double eps, double *mean, double *invstd,        \
                                                 double *scale, double *shift) {                                 \
        const i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                \
        if (k >= K) return;                                                                                      \
        finalize_one<T>(mom_make(mom[3 * k], mom[3 * k + 1], mom[3 * k + 2]), k, k % C, gamma, beta, eps, mean,  \
                        invstd, scale, shift);                                                                   \
    }                                                                                                            \
    extern "C" __global__ void bn_bwd_coeffs_##SUF(const double *__restrict__ sums, const double *__restrict__ mom, \
                                                   i64 K, i64 C, const T *gamma, const double *__restrict__ invstd, \
                                                   double *ca, double *cb, double *cc) {                         \
        const i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                \
        if (k >= K) return;                                                                                      \
        coeffs_one<T>(sums[2 * k], sums[2 * k + 1], mom[3 * k], invstd[k], k, k % C, gamma, ca, cb, cc);        \
    }

BN_TYPED(float, f32)
BN_TYPED(double, f64)

// BN fused with a ReLU (and a residual z, which may be 0): the apply pass
// y = max(0, b·(x − mean) + c + z), and the backward-sums pass over the
// gradient masked by y > 0, which it writes to g.
#define BN_RELU_TYPED(T, SUF)                                                                                    \
    extern "C" __global__ void __launch_bounds__(PLANE_THREADS)                                                  \
        bn_apply_relu_plane_##SUF(const T *x, const T *z, T *out, const i64 *__restrict__ tab, i64 C, i64 S,     \
                                  const double *__restrict__ mean, const double *__restrict__ cb,                \
                                  const double *__restrict__ cc) {                                               \
        plane_apply<T, true>(x, z, out, tab, C, S, mean, 0, cb, cc);                                             \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ROW_X *ROW_Y)                                                   \
        bn_apply_relu_row_##SUF(const T *x, const T *z, T *out, const i64 *__restrict__ tab, i64 C, i64 S,       \
                                i64 ntiles, const double *__restrict__ mean, const double *__restrict__ cb,      \
                                const double *__restrict__ cc) {                                                 \
        row_apply<T, true>(x, z, out, tab, C, S, ntiles, mean, 0, cb, cc);                                       \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(PLANE_THREADS)                                                  \
        bn_sums_relu_plane_##SUF(const T *__restrict__ x, const T *__restrict__ dy, const T *__restrict__ y,     \
                                 T *__restrict__ g, const i64 *__restrict__ tab, const double *__restrict__ mean, \
                                 double *__restrict__ part, i64 C, i64 S) {                                      \
        plane_sums<T, true>(x, dy, tab, mean, part, C, S, y, g);                                                 \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ROW_X *ROW_Y)                                                   \
        bn_sums_relu_row_##SUF(const T *__restrict__ x, const T *__restrict__ dy, const T *__restrict__ y,       \
                               T *__restrict__ g, const i64 *__restrict__ tab, const double *__restrict__ mean,   \
                               double *__restrict__ part, i64 C, i64 S, i64 ntiles) {                            \
        row_sums<T, true>(x, dy, tab, mean, part, C, S, ntiles, y, g);                                           \
    }

BN_RELU_TYPED(float, f32)
BN_RELU_TYPED(double, f64)

// bn_update_running folds K moments into running statistics.
extern "C" __global__ void bn_update_running(const double *__restrict__ mom, i64 K, double *rmean, double *rvar,
                                             double w) {
    const i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K) return;
    running_one(mom_make(mom[3 * k], mom[3 * k + 1], mom[3 * k + 2]), k, rmean, rvar, w);
}

// bn_merge_moments merges R sets of K moments (in[r][k]) in rank order into
// out[k]: the cross-rank step of SyncBN after an all-gather, and the
// accumulation of PreciseBN. out may alias in (the set r = 0).
extern "C" __global__ void bn_merge_moments(const double *in, i64 R, i64 K, double *out) {
    const i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K) return;
    Mom a = mom_make(0, 0, 0);
    for (i64 r = 0; r < R; ++r) {
        const double *p = in + 3 * (r * K + k);
        a = mom_merge(a, mom_make(p[0], p[1], p[2]));
    }
    out[3 * k] = a.n;
    out[3 * k + 1] = a.mean;
    out[3 * k + 2] = a.m2;
}
