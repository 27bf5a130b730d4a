//go:build amd64 && !purego

#include "textflag.h"
#include "rows_amd64.h"

// The AVX-512 inner loops of inner_amd64.go. Each computes what its
// portable namesake in inner_go.go computes, in float64 lanes: float32 data
// is widened on load (VCVTPS2PD) and rounded once on store (VCVTPD2PS).
// The Go wrappers check the lengths; these loops address the data through
// base pointers and never read or write outside it. Every function ends
// with VZEROUPPER: scalar SSE code run after 512-bit code with dirty upper
// halves costs ~300 cycles per instruction on Intel. (Scalar work inside a
// kernel uses VEX-encoded instructions, VADDSD, VMOVSD, which do not.)
//
// One body per kernel, instantiated for each element type by the element
// macros: LD widens 8 elements at src to float64 lanes in dst, LDZ does it
// with the lanes outside mask k zeroed, ST stores Z0 rounded to dst, STM
// stores the lanes of Z0 selected by k. SZ is the element size and
// VB = 8·SZ the bytes of one vector of elements.

#define LD32(src, dst) VCVTPS2PD src, dst
#define LDZ32(src, k, dst) VCVTPS2PD.Z src, k, dst
#define ST32(dst) VCVTPD2PS Z0, Y0; VMOVUPS Y0, dst
#define STM32(k, dst) VCVTPD2PS Z0, Y0; VMOVUPS Y0, k, dst
#define LD64(src, dst) VMOVUPD src, dst
#define LDZ64(src, k, dst) VMOVUPD.Z src, k, dst
#define ST64(dst) VMOVUPD Z0, dst
#define STM64(k, dst) VMOVUPD Z0, k, dst

// FOLD leaves in the low lane of X the sum of the eight lanes of Z, in a
// fixed tree: ((z0+z4)+(z2+z6)) + ((z1+z5)+(z3+z7)). Clobbers Z14.
#define FOLD(Z, Y, X) \
	VEXTRACTF64X4 $1, Z, Y14 \
	VADDPD        Y14, Y, Y \
	VEXTRACTF128  $1, Y, X14 \
	VADDPD        X14, X, X \
	VUNPCKHPD     X, X, X14 \
	VADDSD        X14, X, X

// ---------------------------------------------------------------------
// Plane reductions, over k planes of n ≥ 8 elements, strideb bytes apart:
// plane i is added into part[i] (a Moments: N, Mean, M2 at bytes 0, 8, 16
// of 24). Within a plane, four (sum, dev) or two (dot) vectors of partial
// sums, combined as (a0+a1)+(a2+a3) and folded: a plane's sum depends only
// on its data and length. The r = n mod 8 last elements of a plane are
// taken from the vector of its last eight, with the 8−r lanes already
// counted zeroed (tail mask tm in K1: the top r bits of 8, 0 when r = 0).
//
// Registers: DI the plane (R13 its dy), SI/BX the cursors of the body, CX
// n, AX i, DX the limit of the 32- or 16-wide loop, R11 the tail, R8
// strideb, R9 planes left, R10 part[i], R12 mean[i].

// PLANES runs BODY (which leaves its sums in X0 and X4 or X2) over the
// planes and ACC adds them into part[i].
#define PLANES(BODY, ACC) \
	MOVQ  x+0(FP), DI \
	MOVQ  n+8(FP), CX \
	MOVQ  strideb+16(FP), R8 \
	KMOVQ tm+24(FP), K1 \
	MOVQ  k+32(FP), R9 \
	MOVQ  part+40(FP), R10 \
	TESTQ R9, R9 \
	JLE   end \
plane: \
	MOVQ DI, SI \
	BODY \
	ACC \
	ADDQ R8, DI \
	ADDQ $24, R10 \
	DECQ R9 \
	JNZ  plane \
end: \
	VZEROUPPER \
	RET

// sum: the partial sums in Z0..Z3; SUMBEGIN sets up, SUMEND (after the
// type's own 32- and 16-wide loops) adds the 8-wide step into Z2 and the
// masked tail into Z3 and folds into X0.
#define SUMBEGIN \
	VXORPD Z0, Z0, Z0 \
	VXORPD Z1, Z1, Z1 \
	VXORPD Z2, Z2, Z2 \
	VXORPD Z3, Z3, Z3 \
	XORQ   AX, AX \
	LEAQ   -32(CX), DX

#define SUMEND(LD, LDZ, SZ, VB) \
tail8: \
	LEAQ 8(AX), DX \
	CMPQ DX, CX \
	JGT  tail \
	LD((SI)(AX*SZ), Z4) \
	VADDPD Z4, Z2, Z2 \
tail: \
	KORTESTQ K1, K1 \
	JZ       done \
	LEAQ     -VB(SI)(CX*SZ), R11 \
	LDZ((R11), K1, Z4) \
	VADDPD   Z4, Z3, Z3 \
done: \
	VADDPD Z1, Z0, Z0 \
	VADDPD Z3, Z2, Z2 \
	VADDPD Z2, Z0, Z0 \
	FOLD(Z0, Y0, X0)

// float32 data is added in pairs in float32 before widening (one
// conversion per 16 elements): the first pass of the corrected two-pass
// algorithm needs only an approximate mean (see sumPlanes in
// inner_amd64.go).
#define SUM32 \
	SUMBEGIN \
loop32: \
	CMPQ      AX, DX \
	JGT       tail16 \
	VMOVUPS   (SI)(AX*4), Y4 \
	VADDPS    32(SI)(AX*4), Y4, Y4 \
	VCVTPS2PD Y4, Z4 \
	VADDPD    Z4, Z0, Z0 \
	VMOVUPS   64(SI)(AX*4), Y5 \
	VADDPS    96(SI)(AX*4), Y5, Y5 \
	VCVTPS2PD Y5, Z5 \
	VADDPD    Z5, Z1, Z1 \
	ADDQ      $32, AX \
	JMP       loop32 \
tail16: \
	LEAQ      16(AX), DX \
	CMPQ      DX, CX \
	JGT       tail8 \
	VMOVUPS   (SI)(AX*4), Y4 \
	VADDPS    32(SI)(AX*4), Y4, Y4 \
	VCVTPS2PD Y4, Z4 \
	VADDPD    Z4, Z2, Z2 \
	MOVQ      DX, AX \
	SUMEND(LD32, LDZ32, 4, 32)

#define SUM64 \
	SUMBEGIN \
loop32: \
	CMPQ   AX, DX \
	JGT    tail16 \
	VADDPD (SI)(AX*8), Z0, Z0 \
	VADDPD 64(SI)(AX*8), Z1, Z1 \
	VADDPD 128(SI)(AX*8), Z2, Z2 \
	VADDPD 192(SI)(AX*8), Z3, Z3 \
	ADDQ   $32, AX \
	JMP    loop32 \
tail16: \
	LEAQ   16(AX), DX \
	CMPQ   DX, CX \
	JGT    tail8 \
	VADDPD (SI)(AX*8), Z0, Z0 \
	VADDPD 64(SI)(AX*8), Z1, Z1 \
	MOVQ   DX, AX \
	SUMEND(LD64, LDZ64, 8, 64)

// part[i].Mean += X0.
#define SUMACC \
	VADDSD 8(R10), X0, X0 \
	VMOVSD X0, 8(R10)

// DEV1 accumulates d = x − m (m in Z8) from src: q += d·d (fused), l += d.
#define DEV1(LD, src, q, l, d) \
	LD(src, d) \
	VSUBPD      Z8, d, d \
	VFMADD231PD d, d, q \
	VADDPD      d, l, l

// dev around m (in Z8): Σ(x−m)² in Z0..Z3 → X0, Σ(x−m) in Z4..Z7 → X4.
#define DEV(LD, SZ, VB) \
	VXORPD       Z0, Z0, Z0 \
	VXORPD       Z1, Z1, Z1 \
	VXORPD       Z2, Z2, Z2 \
	VXORPD       Z3, Z3, Z3 \
	VXORPD       Z4, Z4, Z4 \
	VXORPD       Z5, Z5, Z5 \
	VXORPD       Z6, Z6, Z6 \
	VXORPD       Z7, Z7, Z7 \
	XORQ         AX, AX \
	LEAQ         -32(CX), DX \
dloop32: \
	CMPQ AX, DX \
	JGT  dtail16 \
	DEV1(LD, (SI)(AX*SZ), Z0, Z4, Z9) \
	DEV1(LD, VB(SI)(AX*SZ), Z1, Z5, Z10) \
	DEV1(LD, 2*VB(SI)(AX*SZ), Z2, Z6, Z11) \
	DEV1(LD, 3*VB(SI)(AX*SZ), Z3, Z7, Z12) \
	ADDQ $32, AX \
	JMP  dloop32 \
dtail16: \
	LEAQ 16(AX), DX \
	CMPQ DX, CX \
	JGT  dtail8 \
	DEV1(LD, (SI)(AX*SZ), Z0, Z4, Z9) \
	DEV1(LD, VB(SI)(AX*SZ), Z1, Z5, Z10) \
	MOVQ DX, AX \
dtail8: \
	LEAQ 8(AX), DX \
	CMPQ DX, CX \
	JGT  dtail \
	DEV1(LD, (SI)(AX*SZ), Z2, Z6, Z9) \
dtail: \
	KORTESTQ    K1, K1 \
	JZ          ddone \
	LEAQ        -VB(SI)(CX*SZ), R11 \
	LD((R11), Z9) \
	VSUBPD.Z    Z8, Z9, K1, Z9 \
	VFMADD231PD Z9, Z9, Z3 \
	VADDPD      Z9, Z7, Z7 \
ddone: \
	VADDPD Z1, Z0, Z0 \
	VADDPD Z3, Z2, Z2 \
	VADDPD Z2, Z0, Z0 \
	VADDPD Z5, Z4, Z4 \
	VADDPD Z7, Z6, Z6 \
	VADDPD Z6, Z4, Z4 \
	FOLD(Z0, Y0, X0) \
	FOLD(Z4, Y4, X4)

// DEVP: dev around m = part[i].Mean.
#define DEVP(LD, SZ, VB) \
	VBROADCASTSD 8(R10), Z8 \
	DEV(LD, SZ, VB)

// part[i].M2 += X0, part[i].N += X4.
#define DEVACC \
	VADDSD 16(R10), X0, X0 \
	VMOVSD X0, 16(R10) \
	VADDSD (R10), X4, X4 \
	VMOVSD X4, (R10)

// STATS: the moments of one plane of cnt = n elements, as the block loop
// computes them (block.go): m = Σx/cnt, then around m sq = Σ(x−m)² and
// lin = Σ(x−m), and part[i] = {cnt, m + lin/cnt, sq − lin²/cnt}, the plane
// read twice while it is in L1.
#define STATS(SUMB, LD, SZ, VB) \
	SUMB \
	VDIVSD       cnt+48(FP), X0, X0 \
	VMOVAPD      X0, X13 \
	VBROADCASTSD X0, Z8 \
	DEV(LD, SZ, VB)

#define STATSACC \
	VMOVSD cnt+48(FP), X11 \
	VDIVSD X11, X4, X5 \
	VADDSD X5, X13, X5 \
	VMULSD X4, X4, X6 \
	VDIVSD X11, X6, X6 \
	VSUBSD X6, X0, X6 \
	VMOVSD X11, (R10) \
	VMOVSD X5, 8(R10) \
	VMOVSD X6, 16(R10)

// DOT1 accumulates g = dy (from gsrc) and g·(x−m) (x from xsrc, m in Z8):
// a += g, b += g·(x−m) (fused).
#define DOT1(LD, xsrc, gsrc, a, b, g, d) \
	LD(gsrc, g) \
	VADDPD      g, a, a \
	LD(xsrc, d) \
	VSUBPD      Z8, d, d \
	VFMADD231PD d, g, b

// dot around m = mean[i]: Σdy in Z0, Z1 → X0; Σdy·(x−m) in Z2, Z3 → X2.
#define DOT(LD, LDZ, SZ, VB) \
	VBROADCASTSD (R12), Z8 \
	VXORPD       Z0, Z0, Z0 \
	VXORPD       Z1, Z1, Z1 \
	VXORPD       Z2, Z2, Z2 \
	VXORPD       Z3, Z3, Z3 \
	XORQ         AX, AX \
	LEAQ         -16(CX), DX \
loop16: \
	CMPQ AX, DX \
	JGT  tail8 \
	DOT1(LD, (SI)(AX*SZ), (BX)(AX*SZ), Z0, Z2, Z9, Z10) \
	DOT1(LD, VB(SI)(AX*SZ), VB(BX)(AX*SZ), Z1, Z3, Z11, Z12) \
	ADDQ $16, AX \
	JMP  loop16 \
tail8: \
	LEAQ 8(AX), DX \
	CMPQ DX, CX \
	JGT  tail \
	DOT1(LD, (SI)(AX*SZ), (BX)(AX*SZ), Z0, Z2, Z9, Z10) \
tail: \
	KORTESTQ    K1, K1 \
	JZ          done \
	LEAQ        -VB(BX)(CX*SZ), R11 \
	LDZ((R11), K1, Z9) \
	VADDPD      Z9, Z1, Z1 \
	LEAQ        -VB(SI)(CX*SZ), R11 \
	LD((R11), Z10) \
	VSUBPD.Z    Z8, Z10, K1, Z10 \
	VFMADD231PD Z10, Z9, Z3 \
done: \
	VADDPD Z1, Z0, Z0 \
	VADDPD Z3, Z2, Z2 \
	FOLD(Z0, Y0, X0) \
	FOLD(Z2, Y2, X2)

// dot over the planes: x and dy planes at DI and R13, mean[i] at R12;
// part[i].Mean += X0, part[i].M2 += X2.
#define DOTPLANES(LD, LDZ, SZ, VB) \
	MOVQ  x+0(FP), DI \
	MOVQ  dy+8(FP), R13 \
	MOVQ  n+16(FP), CX \
	MOVQ  strideb+24(FP), R8 \
	KMOVQ tm+32(FP), K1 \
	MOVQ  k+40(FP), R9 \
	MOVQ  mean+48(FP), R12 \
	MOVQ  part+56(FP), R10 \
	TESTQ R9, R9 \
	JLE   end \
plane: \
	MOVQ DI, SI \
	MOVQ R13, BX \
	DOT(LD, LDZ, SZ, VB) \
	VADDSD 8(R10), X0, X0 \
	VMOVSD X0, 8(R10) \
	VADDSD 16(R10), X2, X2 \
	VMOVSD X2, 16(R10) \
	ADDQ R8, DI \
	ADDQ R8, R13 \
	ADDQ $8, R12 \
	ADDQ $24, R10 \
	DECQ R9 \
	JNZ  plane \
end: \
	VZEROUPPER \
	RET

// ---------------------------------------------------------------------
// Row reductions (S = 1). x holds rows of channels, ldb bytes apart; the
// wrapper gives the channels of one chunk, nv vectors of 8: vector v < nv−1
// at channel 8v, the last at channel last (its first lanes may redo
// channels of the one before). The accumulators of vector v are the 8
// float64 at byte 64·v of each accumulator array (end = 64·(nv−1) is the
// last one's). Rows are added in row order, four at a time, with unfused
// operations, exactly as the portable loops: the results match them bit
// for bit.
//
// The skeleton, RROWS, is in rows_amd64.h.

// rowSum: s += x, accumulators s at DI.
#define RSUM4(LD) \
	VMOVUPD (DI)(DX*1), Z0 \
	LD((AX), Z1) \
	LD((BX), Z2) \
	LD((R9), Z3) \
	LD((R10), Z4) \
	VADDPD  Z1, Z0, Z0 \
	VADDPD  Z2, Z0, Z0 \
	VADDPD  Z3, Z0, Z0 \
	VADDPD  Z4, Z0, Z0 \
	VMOVUPD Z0, (DI)(DX*1)

#define RSUM1(LD) \
	VMOVUPD (DI)(DX*1), Z0 \
	LD((AX), Z1) \
	VADDPD  Z1, Z0, Z0 \
	VMOVUPD Z0, (DI)(DX*1)

// rowDev: d = x − m, q += d·d, l += d (unfused); m, q, l at DI, R11, R12.
#define RDEV(LD, src) \
	LD(src, Z3) \
	VSUBPD Z0, Z3, Z3 \
	VMULPD Z3, Z3, Z4 \
	VADDPD Z4, Z1, Z1 \
	VADDPD Z3, Z2, Z2

#define RDEVLOAD \
	VMOVUPD (DI)(DX*1), Z0 \
	VMOVUPD (R11)(DX*1), Z1 \
	VMOVUPD (R12)(DX*1), Z2

#define RDEVSTORE \
	VMOVUPD Z1, (R11)(DX*1) \
	VMOVUPD Z2, (R12)(DX*1)

#define RDEV4(LD) \
	RDEVLOAD \
	RDEV(LD, (AX)) \
	RDEV(LD, (BX)) \
	RDEV(LD, (R9)) \
	RDEV(LD, (R10)) \
	RDEVSTORE

#define RDEV1(LD) \
	RDEVLOAD \
	RDEV(LD, (AX)) \
	RDEVSTORE

// rowDot: g = dy (at x + R13), a += g, b += g·(x − m) (unfused); m, a, b
// at DI, R11, R12.
#define RDOT(LD, src) \
	LD((src)(R13*1), Z3) \
	VADDPD Z3, Z1, Z1 \
	LD((src), Z4) \
	VSUBPD Z0, Z4, Z4 \
	VMULPD Z4, Z3, Z4 \
	VADDPD Z4, Z2, Z2

#define RDOT4(LD) \
	RDEVLOAD \
	RDOT(LD, AX) \
	RDOT(LD, BX) \
	RDOT(LD, R9) \
	RDOT(LD, R10) \
	RDEVSTORE

#define RDOT1(LD) \
	RDEVLOAD \
	RDOT(LD, AX) \
	RDEVSTORE

// ---------------------------------------------------------------------
// Row element-wise kernels (S = 1), one row at a time across its w
// channels: vector v < nv−1 at channel 8v, the last at channel last, whose
// lanes already written (the top bits of keep are the new ones) are not
// stored again (out may alias x). The per-channel coefficients are
// float64 arrays indexed by channel: DX is the byte offset 8·channel
// (end = 64·(nv−1), lastc = 8·last). Unfused operations, as the portable
// loops: y = (x−m)·b + c and y = a·dy + (x−m)·b + c.
//
// The skeleton, AROWS, is in rows_amd64.h.

// KEEPK loads the mask of the last vector's new lanes.
#define KEEPK KMOVQ keep+40(FP), K1

// rowAffine: m, b, c at DI, R11, R12; out at x + R13.
#define RAFF(LD) \
	LD((AX), Z0) \
	VSUBPD (DI)(DX*1), Z0, Z0 \
	VMULPD (R11)(DX*1), Z0, Z0 \
	VADDPD (R12)(DX*1), Z0, Z0

// rowAffine2: m, a, b, c at DI, R11, R12, R10; dy at x + BX, out at x + R9.
#define RAFF2(LD) \
	LD((AX), Z0) \
	VSUBPD (DI)(DX*1), Z0, Z0 \
	VMULPD (R12)(DX*1), Z0, Z0 \
	LD((AX)(BX*1), Z1) \
	VMULPD (R11)(DX*1), Z1, Z1 \
	VADDPD Z0, Z1, Z0 \
	VADDPD (R10)(DX*1), Z0, Z0

// func sumPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·sumPlanes32(SB), NOSPLIT, $0-48
	PLANES(SUM32, SUMACC)

// func sumPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·sumPlanes64(SB), NOSPLIT, $0-48
	PLANES(SUM64, SUMACC)

// func devPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·devPlanes32(SB), NOSPLIT, $0-48
	PLANES(DEVP(LD32, 4, 32), DEVACC)

// func devPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·devPlanes64(SB), NOSPLIT, $0-48
	PLANES(DEVP(LD64, 8, 64), DEVACC)

// func statsPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)
TEXT ·statsPlanes32(SB), NOSPLIT, $0-56
	PLANES(STATS(SUM32, LD32, 4, 32), STATSACC)

// func statsPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)
TEXT ·statsPlanes64(SB), NOSPLIT, $0-56
	PLANES(STATS(SUM64, LD64, 8, 64), STATSACC)

// func dotPlanes32(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)
TEXT ·dotPlanes32(SB), NOSPLIT, $0-64
	DOTPLANES(LD32, LDZ32, 4, 32)

// func dotPlanes64(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)
TEXT ·dotPlanes64(SB), NOSPLIT, $0-64
	DOTPLANES(LD64, LDZ64, 8, 64)

// func rowSum32(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)
TEXT ·rowSum32(SB), NOSPLIT, $0-48
	MOVQ s+40(FP), DI
	RROWS(RSUM4(LD32), RSUM1(LD32), 32, 64)

// func rowSum64(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)
TEXT ·rowSum64(SB), NOSPLIT, $0-48
	MOVQ s+40(FP), DI
	RROWS(RSUM4(LD64), RSUM1(LD64), 64, 64)

// func rowDev32(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)
TEXT ·rowDev32(SB), NOSPLIT, $0-64
	MOVQ m+40(FP), DI
	MOVQ q+48(FP), R11
	MOVQ l+56(FP), R12
	RROWS(RDEV4(LD32), RDEV1(LD32), 32, 64)

// func rowDev64(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)
TEXT ·rowDev64(SB), NOSPLIT, $0-64
	MOVQ m+40(FP), DI
	MOVQ q+48(FP), R11
	MOVQ l+56(FP), R12
	RROWS(RDEV4(LD64), RDEV1(LD64), 64, 64)

// func rowDot32(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)
TEXT ·rowDot32(SB), NOSPLIT, $0-72
	MOVQ m+40(FP), DI
	MOVQ a+48(FP), R11
	MOVQ b+56(FP), R12
	MOVQ dyx+64(FP), R13
	RROWS(RDOT4(LD32), RDOT1(LD32), 32, 64)

// func rowDot64(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)
TEXT ·rowDot64(SB), NOSPLIT, $0-72
	MOVQ m+40(FP), DI
	MOVQ a+48(FP), R11
	MOVQ b+56(FP), R12
	MOVQ dyx+64(FP), R13
	RROWS(RDOT4(LD64), RDOT1(LD64), 64, 64)

// func rowAffine32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)
TEXT ·rowAffine32(SB), NOSPLIT, $0-88
	MOVQ m+56(FP), DI
	MOVQ b+64(FP), R11
	MOVQ c+72(FP), R12
	MOVQ ox+80(FP), R13
	AROWS(RAFF(LD32); ST32((AX)(R13*1)), RAFF(LD32); STM32(K1, (AX)(R13*1)), 32, 64, KEEPK)

// func rowAffine64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)
TEXT ·rowAffine64(SB), NOSPLIT, $0-88
	MOVQ m+56(FP), DI
	MOVQ b+64(FP), R11
	MOVQ c+72(FP), R12
	MOVQ ox+80(FP), R13
	AROWS(RAFF(LD64); ST64((AX)(R13*1)), RAFF(LD64); STM64(K1, (AX)(R13*1)), 64, 64, KEEPK)

// func rowAffine2_32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)
TEXT ·rowAffine2_32(SB), NOSPLIT, $0-104
	MOVQ m+56(FP), DI
	MOVQ a+64(FP), R11
	MOVQ b+72(FP), R12
	MOVQ c+80(FP), R10
	MOVQ dyx+88(FP), BX
	MOVQ ox+96(FP), R9
	AROWS(RAFF2(LD32); ST32((AX)(R9*1)), RAFF2(LD32); STM32(K1, (AX)(R9*1)), 32, 64, KEEPK)

// func rowAffine2_64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)
TEXT ·rowAffine2_64(SB), NOSPLIT, $0-104
	MOVQ m+56(FP), DI
	MOVQ a+64(FP), R11
	MOVQ b+72(FP), R12
	MOVQ c+80(FP), R10
	MOVQ dyx+88(FP), BX
	MOVQ ox+96(FP), R9
	AROWS(RAFF2(LD64); ST64((AX)(R9*1)), RAFF2(LD64); STM64(K1, (AX)(R9*1)), 64, 64, KEEPK)
