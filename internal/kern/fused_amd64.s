//go:build amd64 && !purego

#include "textflag.h"

// The element-wise kernels of the fused BN + ReLU passes (fused_amd64.go),
// over nb bytes (a positive multiple of the vector width), unaligned.
//
// relu: x = max(0, x) in place. VMAXP with the value as the second source
// returns it when it is NaN, and −0 for max(+0, −0): NaN and −0 stay, as in
// reluGo.
//
// mask: g = dy where y > 0 (ordered compare: NaN y is false), else +0.
// AVX-512 selects with a zeroing masked load, AVX2 ands dy with the
// compare's all-ones lanes.
//
// Registers: SI dy, BX y, DI x or g, CX nb, AX the byte offset.

#define RELU(MOVU, MAX, XOR, Z0, Z1, VB) \
	MOVQ x+0(FP), DI \
	MOVQ nb+8(FP), CX \
	XOR  Z0, Z0, Z0 \
	XORQ AX, AX \
loop: \
	MOVU (DI)(AX*1), Z1 \
	MAX  Z1, Z0, Z1 \
	MOVU Z1, (DI)(AX*1) \
	ADDQ $VB, AX \
	CMPQ AX, CX \
	JLT  loop \
	VZEROUPPER \
	RET

#define ARGS \
	MOVQ dy+0(FP), SI \
	MOVQ y+8(FP), BX \
	MOVQ out+16(FP), DI \
	MOVQ nb+24(FP), CX \
	XORQ AX, AX

// $0x1e: greater than, ordered, quiet.
#define MASK512(MOVU, MOVZ, CMP, XOR) \
	ARGS \
	XOR Z0, Z0, Z0 \
loop: \
	MOVU (BX)(AX*1), Z1 \
	CMP  $0x1e, Z0, Z1, K1 \
	MOVZ (SI)(AX*1), K1, Z2 \
	MOVU Z2, (DI)(AX*1) \
	ADDQ $64, AX \
	CMPQ AX, CX \
	JLT  loop \
	VZEROUPPER \
	RET

#define MASK256(MOVU, CMP, XOR, AND) \
	ARGS \
	XOR Y0, Y0, Y0 \
loop: \
	MOVU (BX)(AX*1), Y1 \
	CMP  $0x1e, Y0, Y1, Y1 \
	AND  (SI)(AX*1), Y1, Y1 \
	MOVU Y1, (DI)(AX*1) \
	ADDQ $32, AX \
	CMPQ AX, CX \
	JLT  loop \
	VZEROUPPER \
	RET

TEXT ·relu512x32(SB), NOSPLIT, $0-16
	RELU(VMOVUPS, VMAXPS, VXORPS, Z0, Z1, 64)

TEXT ·relu512x64(SB), NOSPLIT, $0-16
	RELU(VMOVUPD, VMAXPD, VXORPD, Z0, Z1, 64)

TEXT ·relu256x32(SB), NOSPLIT, $0-16
	RELU(VMOVUPS, VMAXPS, VXORPS, Y0, Y1, 32)

TEXT ·relu256x64(SB), NOSPLIT, $0-16
	RELU(VMOVUPD, VMAXPD, VXORPD, Y0, Y1, 32)

TEXT ·mask512x32(SB), NOSPLIT, $0-32
	MASK512(VMOVUPS, VMOVUPS.Z, VCMPPS, VXORPS)

TEXT ·mask512x64(SB), NOSPLIT, $0-32
	MASK512(VMOVUPD, VMOVUPD.Z, VCMPPD, VXORPD)

TEXT ·mask256x32(SB), NOSPLIT, $0-32
	MASK256(VMOVUPS, VCMPPS, VXORPS, VANDPS)

TEXT ·mask256x64(SB), NOSPLIT, $0-32
	MASK256(VMOVUPD, VCMPPD, VXORPD, VANDPD)
