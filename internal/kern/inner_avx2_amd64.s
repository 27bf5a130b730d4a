//go:build amd64 && !purego

#include "textflag.h"
#include "rows_amd64.h"

// The AVX2 plane kernels of inner_amd64.go, for CPUs without AVX-512: the
// same computations as the AVX-512 ones of inner_amd64.s and affine_amd64.s
// in 4-lane float64 vectors (ymm), with FMA. Without mask registers the
// r = n mod 4 last elements of a plane are taken from the vector of its
// last four with the 4−r lanes already counted cleared by an AND with a
// lane mask (reductions) or left unstored by VMASKMOVPD/VMASKMOVPS
// (element-wise kernels); the masks come from the tables below, indexed by
// r. Stores are unaligned (no head). Every function ends with VZEROUPPER;
// scalar work inside uses VEX-encoded instructions.
//
// Registers: as in inner_amd64.s; Y13 the float64 lane mask of the tail,
// X12 its float32 form (element-wise kernels), Y14 the fold's scratch.

// m64<>: 5 entries of 4 quadwords, entry r keeps the top r lanes.
DATA m64<>+0(SB)/8, $0
DATA m64<>+8(SB)/8, $0
DATA m64<>+16(SB)/8, $0
DATA m64<>+24(SB)/8, $0
DATA m64<>+32(SB)/8, $0
DATA m64<>+40(SB)/8, $0
DATA m64<>+48(SB)/8, $0
DATA m64<>+56(SB)/8, $-1
DATA m64<>+64(SB)/8, $0
DATA m64<>+72(SB)/8, $0
DATA m64<>+80(SB)/8, $-1
DATA m64<>+88(SB)/8, $-1
DATA m64<>+96(SB)/8, $0
DATA m64<>+104(SB)/8, $-1
DATA m64<>+112(SB)/8, $-1
DATA m64<>+120(SB)/8, $-1
DATA m64<>+128(SB)/8, $-1
DATA m64<>+136(SB)/8, $-1
DATA m64<>+144(SB)/8, $-1
DATA m64<>+152(SB)/8, $-1
GLOBL m64<>(SB), RODATA|NOPTR, $160

// m32<>: the same for 4 doublewords.
DATA m32<>+0(SB)/4, $0
DATA m32<>+4(SB)/4, $0
DATA m32<>+8(SB)/4, $0
DATA m32<>+12(SB)/4, $0
DATA m32<>+16(SB)/4, $0
DATA m32<>+20(SB)/4, $0
DATA m32<>+24(SB)/4, $0
DATA m32<>+28(SB)/4, $-1
DATA m32<>+32(SB)/4, $0
DATA m32<>+36(SB)/4, $0
DATA m32<>+40(SB)/4, $-1
DATA m32<>+44(SB)/4, $-1
DATA m32<>+48(SB)/4, $0
DATA m32<>+52(SB)/4, $-1
DATA m32<>+56(SB)/4, $-1
DATA m32<>+60(SB)/4, $-1
DATA m32<>+64(SB)/4, $-1
DATA m32<>+68(SB)/4, $-1
DATA m32<>+72(SB)/4, $-1
DATA m32<>+76(SB)/4, $-1
GLOBL m32<>(SB), RODATA|NOPTR, $80

#define LDA32(src, dst) VCVTPS2PD src, dst
#define LDA64(src, dst) VMOVUPD src, dst
#define STA32(dst) VCVTPD2PSY Y0, X0; VMOVUPS X0, dst
#define STA64(dst) VMOVUPD Y0, dst
#define STAM32(dst) VCVTPD2PSY Y0, X0; VMASKMOVPS X0, X12, dst
#define STAM64(dst) VMASKMOVPD Y0, Y13, dst

// FOLDA leaves in the low lane of X the sum of the four lanes of Y:
// (y0+y2) + (y1+y3).
#define FOLDA(Y, X) \
	VEXTRACTF128 $1, Y, X14 \
	VADDPD       X14, X, X \
	VUNPCKHPD    X, X, X14 \
	VADDSD       X14, X, X

// MASKS loads the tail masks for r = n mod 4 (in R11) into Y13 and X12.
#define MASKS \
	MOVQ    CX, R11 \
	ANDQ    $3, R11 \
	SHLQ    $5, R11 \
	LEAQ    m64<>(SB), R12 \
	VMOVDQU (R12)(R11*1), Y13 \
	SHRQ    $1, R11 \
	LEAQ    m32<>(SB), R12 \
	VMOVDQU (R12)(R11*1), X12

// PLANESA runs BODY over k planes (strideb bytes apart) and ACC adds its
// sums into part[i], as PLANES does in inner_amd64.s.
#define PLANESA(BODY, ACC) \
	MOVQ x+0(FP), DI \
	MOVQ n+8(FP), CX \
	MOVQ strideb+16(FP), R8 \
	MOVQ k+32(FP), R9 \
	MOVQ part+40(FP), R10 \
	MASKS \
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

// sum in Y0..Y3 → X0.
#define SUMA(LD, SZ, VB) \
	VXORPD Y0, Y0, Y0 \
	VXORPD Y1, Y1, Y1 \
	VXORPD Y2, Y2, Y2 \
	VXORPD Y3, Y3, Y3 \
	XORQ   AX, AX \
	LEAQ   -16(CX), DX \
loop16: \
	CMPQ AX, DX \
	JGT  tail8 \
	LD((SI)(AX*SZ), Y4) \
	VADDPD Y4, Y0, Y0 \
	LD(VB(SI)(AX*SZ), Y5) \
	VADDPD Y5, Y1, Y1 \
	LD(2*VB(SI)(AX*SZ), Y6) \
	VADDPD Y6, Y2, Y2 \
	LD(3*VB(SI)(AX*SZ), Y7) \
	VADDPD Y7, Y3, Y3 \
	ADDQ $16, AX \
	JMP  loop16 \
tail8: \
	LEAQ 8(AX), DX \
	CMPQ DX, CX \
	JGT  tail4 \
	LD((SI)(AX*SZ), Y4) \
	VADDPD Y4, Y0, Y0 \
	LD(VB(SI)(AX*SZ), Y5) \
	VADDPD Y5, Y1, Y1 \
	MOVQ DX, AX \
tail4: \
	LEAQ 4(AX), DX \
	CMPQ DX, CX \
	JGT  tail \
	LD((SI)(AX*SZ), Y4) \
	VADDPD Y4, Y2, Y2 \
tail: \
	LEAQ -VB(SI)(CX*SZ), R11 \
	LD((R11), Y4) \
	VANDPD Y13, Y4, Y4 \
	VADDPD Y4, Y3, Y3 \
	VADDPD Y1, Y0, Y0 \
	VADDPD Y3, Y2, Y2 \
	VADDPD Y2, Y0, Y0 \
	FOLDA(Y0, X0)

// DEVA1: d = x − m (m in Y8), q += d·d (fused), l += d.
#define DEVA1(LD, src, q, l, d) \
	LD(src, d) \
	VSUBPD      Y8, d, d \
	VFMADD231PD d, d, q \
	VADDPD      d, l, l

// dev around m (in Y8): Σ(x−m)² in Y0..Y3 → X0, Σ(x−m) in Y4..Y7 → X4.
#define DEVA(LD, SZ, VB) \
	VXORPD Y0, Y0, Y0 \
	VXORPD Y1, Y1, Y1 \
	VXORPD Y2, Y2, Y2 \
	VXORPD Y3, Y3, Y3 \
	VXORPD Y4, Y4, Y4 \
	VXORPD Y5, Y5, Y5 \
	VXORPD Y6, Y6, Y6 \
	VXORPD Y7, Y7, Y7 \
	XORQ   AX, AX \
	LEAQ   -16(CX), DX \
dloop16: \
	CMPQ AX, DX \
	JGT  dtail8 \
	DEVA1(LD, (SI)(AX*SZ), Y0, Y4, Y9) \
	DEVA1(LD, VB(SI)(AX*SZ), Y1, Y5, Y10) \
	DEVA1(LD, 2*VB(SI)(AX*SZ), Y2, Y6, Y11) \
	DEVA1(LD, 3*VB(SI)(AX*SZ), Y3, Y7, Y12) \
	ADDQ $16, AX \
	JMP  dloop16 \
dtail8: \
	LEAQ 8(AX), DX \
	CMPQ DX, CX \
	JGT  dtail4 \
	DEVA1(LD, (SI)(AX*SZ), Y0, Y4, Y9) \
	DEVA1(LD, VB(SI)(AX*SZ), Y1, Y5, Y10) \
	MOVQ DX, AX \
dtail4: \
	LEAQ 4(AX), DX \
	CMPQ DX, CX \
	JGT  dtail \
	DEVA1(LD, (SI)(AX*SZ), Y2, Y6, Y9) \
dtail: \
	LEAQ        -VB(SI)(CX*SZ), R11 \
	LD((R11), Y9) \
	VSUBPD      Y8, Y9, Y9 \
	VANDPD      Y13, Y9, Y9 \
	VFMADD231PD Y9, Y9, Y3 \
	VADDPD      Y9, Y7, Y7 \
	VADDPD      Y1, Y0, Y0 \
	VADDPD      Y3, Y2, Y2 \
	VADDPD      Y2, Y0, Y0 \
	VADDPD      Y5, Y4, Y4 \
	VADDPD      Y7, Y6, Y6 \
	VADDPD      Y6, Y4, Y4 \
	FOLDA(Y0, X0) \
	FOLDA(Y4, X4)

#define SUMACC \
	VADDSD 8(R10), X0, X0 \
	VMOVSD X0, 8(R10)

#define DEVP(LD, SZ, VB) \
	VBROADCASTSD 8(R10), Y8 \
	DEVA(LD, SZ, VB)

#define DEVACC \
	VADDSD 16(R10), X0, X0 \
	VMOVSD X0, 16(R10) \
	VADDSD (R10), X4, X4 \
	VMOVSD X4, (R10)

// STATS as in inner_amd64.s: m = Σx/cnt (kept in X8, the low lane of its
// broadcast), deviations around m, corrected.
#define STATSA(LD, SZ, VB) \
	SUMA(LD, SZ, VB) \
	VDIVSD       cnt+48(FP), X0, X0 \
	VBROADCASTSD X0, Y8 \
	DEVA(LD, SZ, VB)

#define STATSACC \
	VMOVSD cnt+48(FP), X11 \
	VDIVSD X11, X4, X5 \
	VADDSD X5, X8, X5 \
	VMULSD X4, X4, X6 \
	VDIVSD X11, X6, X6 \
	VSUBSD X6, X0, X6 \
	VMOVSD X11, (R10) \
	VMOVSD X5, 8(R10) \
	VMOVSD X6, 16(R10)

// DOTA1: a += g, b += g·(x−m) (fused).
#define DOTA1(LD, xsrc, gsrc, a, b, g, d) \
	LD(gsrc, g) \
	VADDPD      g, a, a \
	LD(xsrc, d) \
	VSUBPD      Y8, d, d \
	VFMADD231PD d, g, b

// dot around m = mean[i]: Σdy in Y0, Y1 → X0; Σdy·(x−m) in Y2, Y3 → X2.
#define DOTA(LD, SZ, VB) \
	VBROADCASTSD (R12), Y8 \
	VXORPD       Y0, Y0, Y0 \
	VXORPD       Y1, Y1, Y1 \
	VXORPD       Y2, Y2, Y2 \
	VXORPD       Y3, Y3, Y3 \
	XORQ         AX, AX \
	LEAQ         -8(CX), DX \
loop8: \
	CMPQ AX, DX \
	JGT  tail4 \
	DOTA1(LD, (SI)(AX*SZ), (BX)(AX*SZ), Y0, Y2, Y9, Y10) \
	DOTA1(LD, VB(SI)(AX*SZ), VB(BX)(AX*SZ), Y1, Y3, Y11, Y12) \
	ADDQ $8, AX \
	JMP  loop8 \
tail4: \
	LEAQ 4(AX), DX \
	CMPQ DX, CX \
	JGT  tail \
	DOTA1(LD, (SI)(AX*SZ), (BX)(AX*SZ), Y0, Y2, Y9, Y10) \
tail: \
	LEAQ        -VB(BX)(CX*SZ), R11 \
	LD((R11), Y9) \
	VANDPD      Y13, Y9, Y9 \
	VADDPD      Y9, Y1, Y1 \
	LEAQ        -VB(SI)(CX*SZ), R11 \
	LD((R11), Y10) \
	VSUBPD      Y8, Y10, Y10 \
	VANDPD      Y13, Y10, Y10 \
	VFMADD231PD Y10, Y9, Y3 \
	VADDPD      Y1, Y0, Y0 \
	VADDPD      Y3, Y2, Y2 \
	FOLDA(Y0, X0) \
	FOLDA(Y2, X2)

#define DOTPLANESA(LD, SZ, VB) \
	MOVQ x+0(FP), DI \
	MOVQ dy+8(FP), R13 \
	MOVQ n+16(FP), CX \
	MOVQ strideb+24(FP), R8 \
	MOVQ k+40(FP), R9 \
	MOVQ part+56(FP), R10 \
	MASKS \
	MOVQ mean+48(FP), R12 \
	TESTQ R9, R9 \
	JLE   end \
plane: \
	MOVQ DI, SI \
	MOVQ R13, BX \
	DOTA(LD, SZ, VB) \
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

// Element-wise: Y0 = (x−m)·b + c and Y0 = dy·a + ((x−m)·b + c), fused
// (m, b, c, a in Y1, Y2, Y3, Y5).
#define AFFA(LD, src) LD(src, Y0); VSUBPD Y1, Y0, Y0; VFMADD213PD Y3, Y2, Y0
#define AFFA2(LD, xsrc, gsrc) AFFA(LD, xsrc); LD(gsrc, Y4); VFMADD231PD Y5, Y4, Y0

#define COEFA(arg, Y) \
	MOVQ         arg, R13 \
	VBROADCASTSD (R13)(AX*8), Y

// affine over k planes: SI x, DI y, R9/R10 cursors, R11 the vectors left.
#define AFFINEA(LD, ST, STM, SZ, VB) \
	MOVQ x+0(FP), SI \
	MOVQ y+8(FP), DI \
	MOVQ n+16(FP), CX \
	MASKS \
	XORQ AX, AX \
	CMPQ AX, k+32(FP) \
	JGE  end \
plane: \
	COEFA(m+40(FP), Y1) \
	COEFA(b+48(FP), Y2) \
	COEFA(c+56(FP), Y3) \
	MOVQ SI, R9 \
	MOVQ DI, R10 \
	MOVQ CX, R11 \
	SHRQ $2, R11 \
loop: \
	AFFA(LD, (R9)) \
	ST((R10)) \
	ADDQ $VB, R9 \
	ADDQ $VB, R10 \
	DECQ R11 \
	JNZ  loop \
	TESTQ $3, CX \
	JZ   next \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFFA(LD, (R9)) \
	STM((R10)) \
next: \
	ADDQ strideb+24(FP), SI \
	ADDQ strideb+24(FP), DI \
	INCQ AX \
	CMPQ AX, k+32(FP) \
	JLT  plane \
end: \
	VZEROUPPER \
	RET

#define AFFINE2A(LD, ST, STM, SZ, VB) \
	MOVQ x+0(FP), SI \
	MOVQ dy+8(FP), BX \
	MOVQ y+16(FP), DI \
	MOVQ n+24(FP), CX \
	MASKS \
	XORQ AX, AX \
	CMPQ AX, k+40(FP) \
	JGE  end \
plane: \
	COEFA(m+48(FP), Y1) \
	COEFA(a+56(FP), Y5) \
	COEFA(b+64(FP), Y2) \
	COEFA(c+72(FP), Y3) \
	MOVQ SI, R9 \
	MOVQ BX, R12 \
	MOVQ DI, R10 \
	MOVQ CX, R11 \
	SHRQ $2, R11 \
loop: \
	AFFA2(LD, (R9), (R12)) \
	ST((R10)) \
	ADDQ $VB, R9 \
	ADDQ $VB, R12 \
	ADDQ $VB, R10 \
	DECQ R11 \
	JNZ  loop \
	TESTQ $3, CX \
	JZ   next \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(BX)(CX*SZ), R12 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFFA2(LD, (R9), (R12)) \
	STM((R10)) \
next: \
	ADDQ strideb+32(FP), SI \
	ADDQ strideb+32(FP), BX \
	ADDQ strideb+32(FP), DI \
	INCQ AX \
	CMPQ AX, k+40(FP) \
	JLT  plane \
end: \
	VZEROUPPER \
	RET

// Row kernels (S = 1) in 4-lane vectors, on the skeletons of rows_amd64.h
// with 32-byte accumulator vectors: the same unfused operations in row
// order as the AVX-512 ones and the portable loops, bit for bit.

#define RSUMA4(LD) \
	VMOVUPD (DI)(DX*1), Y0 \
	LD((AX), Y1) \
	LD((BX), Y2) \
	LD((R9), Y3) \
	LD((R10), Y4) \
	VADDPD  Y1, Y0, Y0 \
	VADDPD  Y2, Y0, Y0 \
	VADDPD  Y3, Y0, Y0 \
	VADDPD  Y4, Y0, Y0 \
	VMOVUPD Y0, (DI)(DX*1)

#define RSUMA1(LD) \
	VMOVUPD (DI)(DX*1), Y0 \
	LD((AX), Y1) \
	VADDPD  Y1, Y0, Y0 \
	VMOVUPD Y0, (DI)(DX*1)

#define RDEVA(LD, src) \
	LD(src, Y3) \
	VSUBPD Y0, Y3, Y3 \
	VMULPD Y3, Y3, Y4 \
	VADDPD Y4, Y1, Y1 \
	VADDPD Y3, Y2, Y2

#define RLOADA \
	VMOVUPD (DI)(DX*1), Y0 \
	VMOVUPD (R11)(DX*1), Y1 \
	VMOVUPD (R12)(DX*1), Y2

#define RSTOREA \
	VMOVUPD Y1, (R11)(DX*1) \
	VMOVUPD Y2, (R12)(DX*1)

#define RDEVA4(LD) \
	RLOADA \
	RDEVA(LD, (AX)) \
	RDEVA(LD, (BX)) \
	RDEVA(LD, (R9)) \
	RDEVA(LD, (R10)) \
	RSTOREA

#define RDEVA1(LD) \
	RLOADA \
	RDEVA(LD, (AX)) \
	RSTOREA

#define RDOTA(LD, src) \
	LD((src)(R13*1), Y3) \
	VADDPD Y3, Y1, Y1 \
	LD((src), Y4) \
	VSUBPD Y0, Y4, Y4 \
	VMULPD Y4, Y3, Y4 \
	VADDPD Y4, Y2, Y2

#define RDOTA4(LD) \
	RLOADA \
	RDOTA(LD, AX) \
	RDOTA(LD, BX) \
	RDOTA(LD, R9) \
	RDOTA(LD, R10) \
	RSTOREA

#define RDOTA1(LD) \
	RLOADA \
	RDOTA(LD, AX) \
	RSTOREA

#define RAFFA(LD) \
	LD((AX), Y0) \
	VSUBPD (DI)(DX*1), Y0, Y0 \
	VMULPD (R11)(DX*1), Y0, Y0 \
	VADDPD (R12)(DX*1), Y0, Y0

#define RAFF2A(LD) \
	LD((AX), Y0) \
	VSUBPD (DI)(DX*1), Y0, Y0 \
	VMULPD (R12)(DX*1), Y0, Y0 \
	LD((AX)(BX*1), Y1) \
	VMULPD (R11)(DX*1), Y1, Y1 \
	VADDPD Y0, Y1, Y0 \
	VADDPD (R10)(DX*1), Y0, Y0

// KEEPA loads the masks of the last vector's keep = r new top lanes.
#define KEEPA \
	MOVQ    keep+40(FP), AX \
	SHLQ    $5, AX \
	LEAQ    m64<>(SB), DX \
	VMOVDQU (DX)(AX*1), Y13 \
	SHRQ    $1, AX \
	LEAQ    m32<>(SB), DX \
	VMOVDQU (DX)(AX*1), X12

// func sumPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·sumPlanesA32(SB), NOSPLIT, $0-48
	PLANESA(SUMA(LDA32, 4, 16), SUMACC)

// func sumPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·sumPlanesA64(SB), NOSPLIT, $0-48
	PLANESA(SUMA(LDA64, 8, 32), SUMACC)

// func devPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·devPlanesA32(SB), NOSPLIT, $0-48
	PLANESA(DEVP(LDA32, 4, 16), DEVACC)

// func devPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)
TEXT ·devPlanesA64(SB), NOSPLIT, $0-48
	PLANESA(DEVP(LDA64, 8, 32), DEVACC)

// func statsPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)
TEXT ·statsPlanesA32(SB), NOSPLIT, $0-56
	PLANESA(STATSA(LDA32, 4, 16), STATSACC)

// func statsPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)
TEXT ·statsPlanesA64(SB), NOSPLIT, $0-56
	PLANESA(STATSA(LDA64, 8, 32), STATSACC)

// func dotPlanesA32(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)
TEXT ·dotPlanesA32(SB), NOSPLIT, $0-64
	DOTPLANESA(LDA32, 4, 16)

// func dotPlanesA64(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)
TEXT ·dotPlanesA64(SB), NOSPLIT, $0-64
	DOTPLANESA(LDA64, 8, 32)

// func affinePlanesA32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanesA32(SB), NOSPLIT, $0-64
	AFFINEA(LDA32, STA32, STAM32, 4, 16)

// func affinePlanesA64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanesA64(SB), NOSPLIT, $0-64
	AFFINEA(LDA64, STA64, STAM64, 8, 32)

// func affine2PlanesA32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2PlanesA32(SB), NOSPLIT, $0-80
	AFFINE2A(LDA32, STA32, STAM32, 4, 16)

// func affine2PlanesA64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2PlanesA64(SB), NOSPLIT, $0-80
	AFFINE2A(LDA64, STA64, STAM64, 8, 32)

// func rowSumA32(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)
TEXT ·rowSumA32(SB), NOSPLIT, $0-48
	MOVQ s+40(FP), DI
	RROWS(RSUMA4(LDA32), RSUMA1(LDA32), 16, 32)

// func rowSumA64(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)
TEXT ·rowSumA64(SB), NOSPLIT, $0-48
	MOVQ s+40(FP), DI
	RROWS(RSUMA4(LDA64), RSUMA1(LDA64), 32, 32)

// func rowDevA32(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)
TEXT ·rowDevA32(SB), NOSPLIT, $0-64
	MOVQ m+40(FP), DI
	MOVQ q+48(FP), R11
	MOVQ l+56(FP), R12
	RROWS(RDEVA4(LDA32), RDEVA1(LDA32), 16, 32)

// func rowDevA64(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)
TEXT ·rowDevA64(SB), NOSPLIT, $0-64
	MOVQ m+40(FP), DI
	MOVQ q+48(FP), R11
	MOVQ l+56(FP), R12
	RROWS(RDEVA4(LDA64), RDEVA1(LDA64), 32, 32)

// func rowDotA32(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)
TEXT ·rowDotA32(SB), NOSPLIT, $0-72
	MOVQ m+40(FP), DI
	MOVQ a+48(FP), R11
	MOVQ b+56(FP), R12
	MOVQ dyx+64(FP), R13
	RROWS(RDOTA4(LDA32), RDOTA1(LDA32), 16, 32)

// func rowDotA64(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)
TEXT ·rowDotA64(SB), NOSPLIT, $0-72
	MOVQ m+40(FP), DI
	MOVQ a+48(FP), R11
	MOVQ b+56(FP), R12
	MOVQ dyx+64(FP), R13
	RROWS(RDOTA4(LDA64), RDOTA1(LDA64), 32, 32)

// func rowAffineA32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)
TEXT ·rowAffineA32(SB), NOSPLIT, $0-88
	MOVQ m+56(FP), DI
	MOVQ b+64(FP), R11
	MOVQ c+72(FP), R12
	MOVQ ox+80(FP), R13
	AROWS(RAFFA(LDA32); STA32((AX)(R13*1)), RAFFA(LDA32); STAM32((AX)(R13*1)), 16, 32, KEEPA)

// func rowAffineA64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)
TEXT ·rowAffineA64(SB), NOSPLIT, $0-88
	MOVQ m+56(FP), DI
	MOVQ b+64(FP), R11
	MOVQ c+72(FP), R12
	MOVQ ox+80(FP), R13
	AROWS(RAFFA(LDA64); STA64((AX)(R13*1)), RAFFA(LDA64); STAM64((AX)(R13*1)), 32, 32, KEEPA)

// func rowAffine2A32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)
TEXT ·rowAffine2A32(SB), NOSPLIT, $0-104
	MOVQ m+56(FP), DI
	MOVQ a+64(FP), R11
	MOVQ b+72(FP), R12
	MOVQ c+80(FP), R10
	MOVQ dyx+88(FP), BX
	MOVQ ox+96(FP), R9
	AROWS(RAFF2A(LDA32); STA32((AX)(R9*1)), RAFF2A(LDA32); STAM32((AX)(R9*1)), 16, 32, KEEPA)

// func rowAffine2A64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)
TEXT ·rowAffine2A64(SB), NOSPLIT, $0-104
	MOVQ m+56(FP), DI
	MOVQ a+64(FP), R11
	MOVQ b+72(FP), R12
	MOVQ c+80(FP), R10
	MOVQ dyx+88(FP), BX
	MOVQ ox+96(FP), R9
	AROWS(RAFF2A(LDA64); STA64((AX)(R9*1)), RAFF2A(LDA64); STAM64((AX)(R9*1)), 32, 32, KEEPA)

