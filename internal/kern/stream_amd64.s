//go:build goexperiment.simd && amd64

#include "textflag.h"

// The streaming (non-temporal) element-wise plane kernels of
// inner_stream_amd64.go. Each computes, lane for lane, exactly the
// operations of affineAVX512 / affine2AVX512 (float64 lanes, the same fused
// multiply-adds) and differs only in how y reaches memory: the body is
// written with VMOVNTPS/VMOVNTPD to 32-byte (float32) or 64-byte (float64)
// aligned addresses, bypassing the caches; the h < 8 elements before the
// first aligned one and the t < 8 after the last full vector are written
// with masked ordinary stores (masks hm over x[0:8], tm over x[n-8:n]).
// Requires n ≥ 8. The caller orders the stores with streamFence.

// Z1 = m, Z2 = b, Z3 = c, Z5 = a.

#define AFF32(src, dst) \
	VCVTPS2PD src, dst \
	VSUBPD Z1, dst, dst \
	VFMADD213PD Z3, Z2, dst

#define AFF64(src, dst) \
	VMOVUPD src, dst \
	VSUBPD Z1, dst, dst \
	VFMADD213PD Z3, Z2, dst

// func affineStream32(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affineStream32(SB), NOSPLIT, $0-72
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	MOVQ h+24(FP), DX
	VBROADCASTSD m+48(FP), Z1
	VBROADCASTSD b+56(FP), Z2
	VBROADCASTSD c+64(FP), Z3
	TESTQ DX, DX
	JZ a32body
	KMOVQ hm+32(FP), K1
	AFF32((SI), Z0)
	VCVTPD2PS Z0, Y0
	VMOVUPS Y0, K1, (DI)
a32body:
	MOVQ CX, R8
	SUBQ DX, R8
	ANDQ $-8, R8
	LEAQ (SI)(DX*4), R9
	LEAQ (DI)(DX*4), R10
	LEAQ (R9)(R8*4), R11
	TESTQ R8, R8
	JZ a32tail
a32loop:
	AFF32((R9), Z0)
	VCVTPD2PS Z0, Y0
	VMOVNTPS Y0, (R10)
	ADDQ $32, R9
	ADDQ $32, R10
	CMPQ R9, R11
	JB a32loop
a32tail:
	ADDQ DX, R8
	CMPQ R8, CX
	JEQ a32done
	KMOVQ tm+40(FP), K2
	LEAQ -32(SI)(CX*4), R9
	LEAQ -32(DI)(CX*4), R10
	AFF32((R9), Z0)
	VCVTPD2PS Z0, Y0
	VMOVUPS Y0, K2, (R10)
a32done:
	VZEROUPPER
	RET

// func affineStream64(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)
TEXT ·affineStream64(SB), NOSPLIT, $0-72
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	MOVQ h+24(FP), DX
	VBROADCASTSD m+48(FP), Z1
	VBROADCASTSD b+56(FP), Z2
	VBROADCASTSD c+64(FP), Z3
	TESTQ DX, DX
	JZ a64body
	KMOVQ hm+32(FP), K1
	AFF64((SI), Z0)
	VMOVUPD Z0, K1, (DI)
a64body:
	MOVQ CX, R8
	SUBQ DX, R8
	ANDQ $-8, R8
	LEAQ (SI)(DX*8), R9
	LEAQ (DI)(DX*8), R10
	LEAQ (R9)(R8*8), R11
	TESTQ R8, R8
	JZ a64tail
a64loop:
	AFF64((R9), Z0)
	VMOVNTPD Z0, (R10)
	ADDQ $64, R9
	ADDQ $64, R10
	CMPQ R9, R11
	JB a64loop
a64tail:
	ADDQ DX, R8
	CMPQ R8, CX
	JEQ a64done
	KMOVQ tm+40(FP), K2
	LEAQ -64(SI)(CX*8), R9
	LEAQ -64(DI)(CX*8), R10
	AFF64((R9), Z0)
	VMOVUPD Z0, K2, (R10)
a64done:
	VZEROUPPER
	RET

// The backward pass: y = g·a + ((x−m)·b + c), both fused.

// func affine2Stream32(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2Stream32(SB), NOSPLIT, $0-88
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ h+32(FP), DX
	VBROADCASTSD m+56(FP), Z1
	VBROADCASTSD a+64(FP), Z5
	VBROADCASTSD b+72(FP), Z2
	VBROADCASTSD c+80(FP), Z3
	TESTQ DX, DX
	JZ b32body
	KMOVQ hm+40(FP), K1
	AFF32((SI), Z0)
	VCVTPS2PD (BX), Z4
	VFMADD231PD Z5, Z4, Z0
	VCVTPD2PS Z0, Y0
	VMOVUPS Y0, K1, (DI)
b32body:
	MOVQ CX, R8
	SUBQ DX, R8
	ANDQ $-8, R8
	LEAQ (SI)(DX*4), R9
	LEAQ (BX)(DX*4), R12
	LEAQ (DI)(DX*4), R10
	LEAQ (R9)(R8*4), R11
	TESTQ R8, R8
	JZ b32tail
b32loop:
	AFF32((R9), Z0)
	VCVTPS2PD (R12), Z4
	VFMADD231PD Z5, Z4, Z0
	VCVTPD2PS Z0, Y0
	VMOVNTPS Y0, (R10)
	ADDQ $32, R9
	ADDQ $32, R12
	ADDQ $32, R10
	CMPQ R9, R11
	JB b32loop
b32tail:
	ADDQ DX, R8
	CMPQ R8, CX
	JEQ b32done
	KMOVQ tm+48(FP), K2
	LEAQ -32(SI)(CX*4), R9
	LEAQ -32(BX)(CX*4), R12
	LEAQ -32(DI)(CX*4), R10
	AFF32((R9), Z0)
	VCVTPS2PD (R12), Z4
	VFMADD231PD Z5, Z4, Z0
	VCVTPD2PS Z0, Y0
	VMOVUPS Y0, K2, (R10)
b32done:
	VZEROUPPER
	RET

// func affine2Stream64(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)
TEXT ·affine2Stream64(SB), NOSPLIT, $0-88
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ h+32(FP), DX
	VBROADCASTSD m+56(FP), Z1
	VBROADCASTSD a+64(FP), Z5
	VBROADCASTSD b+72(FP), Z2
	VBROADCASTSD c+80(FP), Z3
	TESTQ DX, DX
	JZ b64body
	KMOVQ hm+40(FP), K1
	AFF64((SI), Z0)
	VMOVUPD (BX), Z4
	VFMADD231PD Z5, Z4, Z0
	VMOVUPD Z0, K1, (DI)
b64body:
	MOVQ CX, R8
	SUBQ DX, R8
	ANDQ $-8, R8
	LEAQ (SI)(DX*8), R9
	LEAQ (BX)(DX*8), R12
	LEAQ (DI)(DX*8), R10
	LEAQ (R9)(R8*8), R11
	TESTQ R8, R8
	JZ b64tail
b64loop:
	AFF64((R9), Z0)
	VMOVUPD (R12), Z4
	VFMADD231PD Z5, Z4, Z0
	VMOVNTPD Z0, (R10)
	ADDQ $64, R9
	ADDQ $64, R12
	ADDQ $64, R10
	CMPQ R9, R11
	JB b64loop
b64tail:
	ADDQ DX, R8
	CMPQ R8, CX
	JEQ b64done
	KMOVQ tm+48(FP), K2
	LEAQ -64(SI)(CX*8), R9
	LEAQ -64(BX)(CX*8), R12
	LEAQ -64(DI)(CX*8), R10
	AFF64((R9), Z0)
	VMOVUPD (R12), Z4
	VFMADD231PD Z5, Z4, Z0
	VMOVUPD Z0, K2, (R10)
b64done:
	VZEROUPPER
	RET

// func streamFence()
TEXT ·streamFence(SB), NOSPLIT, $0-0
	SFENCE
	RET
