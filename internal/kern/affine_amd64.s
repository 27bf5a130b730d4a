//go:build amd64 && !purego

#include "textflag.h"

// The element-wise plane kernels of inner_amd64.go (y = (x−m)·b + c and
// y = dy·a + ((x−m)·b + c), float64 lanes, fused multiply-adds), in two
// instantiations that differ only in how y reaches memory: cached stores
// (affine32, ...) and streaming, non-temporal ones that bypass the caches
// (affineStream32, ...; inner_amd64.go says when). Streamed or not, y is
// the same bit for bit. The body is written to 32-byte (float32) or
// 64-byte (float64) aligned addresses (aligned streaming stores; for
// cached ones no store splits a cache line); the h < 8 elements before the
// first aligned one and the t < 8 after the last full vector are written
// with masked ordinary stores (masks hm over x[0:8], tm over x[n-8:n]).
// Requires n ≥ 8. The caller orders streaming stores with streamFence.
//
// One body per kernel, instantiated for each element type and store by the
// macros below: LD widens 8 elements to float64 lanes, ST stores Z0 (ST..
// cached, NT.. streaming), STM stores the lanes of Z0 selected by a mask
// register; SZ is the element size, VB = 8·SZ the bytes of one vector of
// elements.
//
// Registers: SI x, BX dy, DI y, CX n, DX h, R8 body length, R9/R12/R10 the
// x/dy/y cursors, R11 the loop count (four vectors, then one at a time);
// Z1 m, Z2 b, Z3 c, Z5 a.

#define LD32(src, dst) VCVTPS2PD src, dst
#define ST32(dst) VCVTPD2PS Z0, Y0; VMOVAPS Y0, dst
#define NT32(dst) VCVTPD2PS Z0, Y0; VMOVNTPS Y0, dst
#define STM32(k, dst) VCVTPD2PS Z0, Y0; VMOVUPS Y0, k, dst
#define LD64(src, dst) VMOVUPD src, dst
#define ST64(dst) VMOVAPD Z0, dst
#define NT64(dst) VMOVNTPD Z0, dst
#define STM64(k, dst) VMOVUPD Z0, k, dst

// Z0 = (x−m)·b + c, fused, from the elements at src.
#define AFF(LD, src) LD(src, Z0); VSUBPD Z1, Z0, Z0; VFMADD213PD Z3, Z2, Z0

// Z0 = dy·a + ((x−m)·b + c), both fused.
#define AFF2(LD, xsrc, gsrc) AFF(LD, xsrc); LD(gsrc, Z4); VFMADD231PD Z5, Z4, Z0

// affine: y = (x−m)·b + c.
#define AFFINE(LD, ST, STM, SZ, VB) \
	MOVQ x+0(FP), SI \
	MOVQ y+8(FP), DI \
	MOVQ n+16(FP), CX \
	MOVQ h+24(FP), DX \
	VBROADCASTSD m+48(FP), Z1 \
	VBROADCASTSD b+56(FP), Z2 \
	VBROADCASTSD c+64(FP), Z3 \
	TESTQ DX, DX \
	JZ body \
	KMOVQ hm+32(FP), K1 \
	AFF(LD, (SI)) \
	STM(K1, (DI)) \
body: \
	MOVQ CX, R8 \
	SUBQ DX, R8 \
	ANDQ $-8, R8 \
	LEAQ (SI)(DX*SZ), R9 \
	LEAQ (DI)(DX*SZ), R10 \
	MOVQ R8, R11 \
	SHRQ $5, R11 \
	JZ one \
loop4: \
	AFF(LD, (R9)) \
	ST((R10)) \
	AFF(LD, VB(R9)) \
	ST(VB(R10)) \
	AFF(LD, 2*VB(R9)) \
	ST(2*VB(R10)) \
	AFF(LD, 3*VB(R9)) \
	ST(3*VB(R10)) \
	ADDQ $4*VB, R9 \
	ADDQ $4*VB, R10 \
	DECQ R11 \
	JNZ loop4 \
one: \
	MOVQ R8, R11 \
	ANDQ $24, R11 \
	SHRQ $3, R11 \
	JZ tail \
loop1: \
	AFF(LD, (R9)) \
	ST((R10)) \
	ADDQ $VB, R9 \
	ADDQ $VB, R10 \
	DECQ R11 \
	JNZ loop1 \
tail: \
	ADDQ DX, R8 \
	CMPQ R8, CX \
	JEQ done \
	KMOVQ tm+40(FP), K2 \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFF(LD, (R9)) \
	STM(K2, (R10)) \
done: \
	VZEROUPPER \
	RET

// affine2: y = dy·a + ((x−m)·b + c).
#define AFFINE2(LD, ST, STM, SZ, VB) \
	MOVQ x+0(FP), SI \
	MOVQ dy+8(FP), BX \
	MOVQ y+16(FP), DI \
	MOVQ n+24(FP), CX \
	MOVQ h+32(FP), DX \
	VBROADCASTSD m+56(FP), Z1 \
	VBROADCASTSD a+64(FP), Z5 \
	VBROADCASTSD b+72(FP), Z2 \
	VBROADCASTSD c+80(FP), Z3 \
	TESTQ DX, DX \
	JZ body \
	KMOVQ hm+40(FP), K1 \
	AFF2(LD, (SI), (BX)) \
	STM(K1, (DI)) \
body: \
	MOVQ CX, R8 \
	SUBQ DX, R8 \
	ANDQ $-8, R8 \
	LEAQ (SI)(DX*SZ), R9 \
	LEAQ (BX)(DX*SZ), R12 \
	LEAQ (DI)(DX*SZ), R10 \
	MOVQ R8, R11 \
	SHRQ $5, R11 \
	JZ one \
loop4: \
	AFF2(LD, (R9), (R12)) \
	ST((R10)) \
	AFF2(LD, VB(R9), VB(R12)) \
	ST(VB(R10)) \
	AFF2(LD, 2*VB(R9), 2*VB(R12)) \
	ST(2*VB(R10)) \
	AFF2(LD, 3*VB(R9), 3*VB(R12)) \
	ST(3*VB(R10)) \
	ADDQ $4*VB, R9 \
	ADDQ $4*VB, R12 \
	ADDQ $4*VB, R10 \
	DECQ R11 \
	JNZ loop4 \
one: \
	MOVQ R8, R11 \
	ANDQ $24, R11 \
	SHRQ $3, R11 \
	JZ tail \
loop1: \
	AFF2(LD, (R9), (R12)) \
	ST((R10)) \
	ADDQ $VB, R9 \
	ADDQ $VB, R12 \
	ADDQ $VB, R10 \
	DECQ R11 \
	JNZ loop1 \
tail: \
	ADDQ DX, R8 \
	CMPQ R8, CX \
	JEQ done \
	KMOVQ tm+48(FP), K2 \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(BX)(CX*SZ), R12 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFF2(LD, (R9), (R12)) \
	STM(K2, (R10)) \
done: \
	VZEROUPPER \
	RET

// func affine32(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affine32(SB), NOSPLIT, $0-72
	AFFINE(LD32, ST32, STM32, 4, 32)

// func affine64(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affine64(SB), NOSPLIT, $0-72
	AFFINE(LD64, ST64, STM64, 8, 64)

// func affine2_32(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2_32(SB), NOSPLIT, $0-88
	AFFINE2(LD32, ST32, STM32, 4, 32)

// func affine2_64(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2_64(SB), NOSPLIT, $0-88
	AFFINE2(LD64, ST64, STM64, 8, 64)

// func affineStream32(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affineStream32(SB), NOSPLIT, $0-72
	AFFINE(LD32, NT32, STM32, 4, 32)

// func affineStream64(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affineStream64(SB), NOSPLIT, $0-72
	AFFINE(LD64, NT64, STM64, 8, 64)

// func affine2Stream32(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2Stream32(SB), NOSPLIT, $0-88
	AFFINE2(LD32, NT32, STM32, 4, 32)

// func affine2Stream64(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2Stream64(SB), NOSPLIT, $0-88
	AFFINE2(LD64, NT64, STM64, 8, 64)

// func streamFence()
TEXT ·streamFence(SB), NOSPLIT, $0-0
	SFENCE
	RET
