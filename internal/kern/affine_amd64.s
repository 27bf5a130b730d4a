//go:build amd64 && !purego

#include "textflag.h"

// The element-wise plane kernels of inner_amd64.go over k planes of n ≥ 8
// elements, strideb bytes apart, with the coefficients of plane i at
// index i of float64 arrays: y = (x−m)·b + c and y = dy·a + ((x−m)·b + c),
// float64 lanes, fused multiply-adds. Two instantiations differ only in
// how y reaches memory: cached stores (affinePlanes32, ...) and streaming,
// non-temporal ones that bypass the caches (affinePlanesNT32, ...;
// inner_amd64.go says when). Streamed or not, y is the same bit for bit.
// Each plane's body is written to 32-byte (float32) or 64-byte (float64)
// aligned addresses (aligned streaming stores; for cached ones no store
// splits a cache line); the h < 8 elements before the first aligned one
// and the t < 8 after the last full vector are written with masked
// ordinary stores (K1 = the first h lanes of y[0:8], K2 = the last t lanes
// of y[n−8:n]). The caller orders streaming stores with streamFence.
//
// One body per kernel, instantiated for each element type and store by the
// macros below: LD widens 8 elements to float64 lanes, ST stores Z0 (ST..
// cached, NT.. streaming), STM stores the lanes of Z0 selected by a mask
// register; SZ is the element size, VB = 8·SZ the bytes of one vector of
// elements, LG = log2(SZ).
//
// Registers: SI x, BX dy, DI y (the plane), CX n, AX the plane index, DX h,
// R8 body length, R9/R12/R10 the x/dy/y cursors, R11 the loop count (four
// vectors, then one at a time), R13 a coefficient array; Z1 m, Z2 b,
// Z3 c, Z5 a.

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

// HEAD sets DX = h (the elements of the plane at DI before the first one
// aligned to VB bytes), K1 = its h-lane head mask and K2 the tail mask of
// t = (n−h) mod 8 top lanes.
#define HEAD(VB, LG) \
	MOVQ  DI, DX \
	NEGQ  DX \
	ANDQ  $(VB-1), DX \
	SHRQ  $LG, DX \
	MOVL  $1, R8 \
	SHLXQ DX, R8, R8 \
	DECQ  R8 \
	KMOVQ R8, K1 \
	MOVQ  CX, R9 \
	SUBQ  DX, R9 \
	ANDQ  $7, R9 \
	MOVL  $8, R10 \
	SUBQ  R9, R10 \
	MOVL  $0xff, R11 \
	SHLXQ R10, R11, R11 \
	ANDQ  $0xff, R11 \
	KMOVQ R11, K2

// COEF broadcasts element AX of the float64 array at arg into Z.
#define COEF(arg, Z) \
	MOVQ         arg, R13 \
	VBROADCASTSD (R13)(AX*8), Z

// affine: y = (x−m)·b + c.
#define AFFINE(LD, ST, STM, SZ, VB, LG) \
	MOVQ x+0(FP), SI \
	MOVQ y+8(FP), DI \
	MOVQ n+16(FP), CX \
	XORQ AX, AX \
	CMPQ AX, k+32(FP) \
	JGE  end \
plane: \
	COEF(m+40(FP), Z1) \
	COEF(b+48(FP), Z2) \
	COEF(c+56(FP), Z3) \
	HEAD(VB, LG) \
	TESTQ DX, DX \
	JZ body \
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
	JEQ next \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFF(LD, (R9)) \
	STM(K2, (R10)) \
next: \
	ADDQ strideb+24(FP), SI \
	ADDQ strideb+24(FP), DI \
	INCQ AX \
	CMPQ AX, k+32(FP) \
	JLT  plane \
end: \
	VZEROUPPER \
	RET

// affine2: y = dy·a + ((x−m)·b + c).
#define AFFINE2(LD, ST, STM, SZ, VB, LG) \
	MOVQ x+0(FP), SI \
	MOVQ dy+8(FP), BX \
	MOVQ y+16(FP), DI \
	MOVQ n+24(FP), CX \
	XORQ AX, AX \
	CMPQ AX, k+40(FP) \
	JGE  end \
plane: \
	COEF(m+48(FP), Z1) \
	COEF(a+56(FP), Z5) \
	COEF(b+64(FP), Z2) \
	COEF(c+72(FP), Z3) \
	HEAD(VB, LG) \
	TESTQ DX, DX \
	JZ body \
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
	JEQ next \
	LEAQ -VB(SI)(CX*SZ), R9 \
	LEAQ -VB(BX)(CX*SZ), R12 \
	LEAQ -VB(DI)(CX*SZ), R10 \
	AFF2(LD, (R9), (R12)) \
	STM(K2, (R10)) \
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

// func affinePlanes32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanes32(SB), NOSPLIT, $0-64
	AFFINE(LD32, ST32, STM32, 4, 32, 2)

// func affinePlanes64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanes64(SB), NOSPLIT, $0-64
	AFFINE(LD64, ST64, STM64, 8, 64, 3)

// func affine2Planes32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2Planes32(SB), NOSPLIT, $0-80
	AFFINE2(LD32, ST32, STM32, 4, 32, 2)

// func affine2Planes64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2Planes64(SB), NOSPLIT, $0-80
	AFFINE2(LD64, ST64, STM64, 8, 64, 3)

// func affinePlanesNT32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanesNT32(SB), NOSPLIT, $0-64
	AFFINE(LD32, NT32, STM32, 4, 32, 2)

// func affinePlanesNT64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)
TEXT ·affinePlanesNT64(SB), NOSPLIT, $0-64
	AFFINE(LD64, NT64, STM64, 8, 64, 3)

// func affine2PlanesNT32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2PlanesNT32(SB), NOSPLIT, $0-80
	AFFINE2(LD32, NT32, STM32, 4, 32, 2)

// func affine2PlanesNT64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)
TEXT ·affine2PlanesNT64(SB), NOSPLIT, $0-80
	AFFINE2(LD64, NT64, STM64, 8, 64, 3)

// func streamFence()
TEXT ·streamFence(SB), NOSPLIT, $0-0
	SFENCE
	RET
