// The row skeletons of the AVX-512 (inner_amd64.s) and AVX2
// (inner_avx2_amd64.s) row kernels. VB is the bytes of one vector of
// elements, ACCB those of one vector of float64 accumulators or
// coefficients.

// RROWS: the row reductions. x holds rows of channels, ldb bytes apart;
// the vectors of a chunk are at 0, VB, 2·VB, … and the last at lastb; the
// accumulators of vector v at byte ACCB·v of each accumulator array (end =
// that of the last vector). Rows are added four at a time, then one.
//
// Registers: SI the first row of the group, R8 ldb, CX rows left, DX the
// accumulator offset, AX BX R9 R10 the vector's address in the group's
// four rows.
#define RROWS(BODY4, BODY1, VB, ACCB) \
	MOVQ x+0(FP), SI \
	MOVQ ldb+8(FP), R8 \
	MOVQ rows+16(FP), CX \
g4: \
	CMPQ CX, $4 \
	JLT  g1 \
	MOVQ SI, AX \
	LEAQ (SI)(R8*1), BX \
	LEAQ (SI)(R8*2), R9 \
	LEAQ (BX)(R8*2), R10 \
	XORQ DX, DX \
	CMPQ DX, end+24(FP) \
	JGE  g4l \
g4v: \
	BODY4 \
	ADDQ $VB, AX \
	ADDQ $VB, BX \
	ADDQ $VB, R9 \
	ADDQ $VB, R10 \
	ADDQ $ACCB, DX \
	CMPQ DX, end+24(FP) \
	JLT  g4v \
g4l: \
	MOVQ lastb+32(FP), AX \
	ADDQ SI, AX \
	LEAQ (AX)(R8*1), BX \
	LEAQ (AX)(R8*2), R9 \
	LEAQ (BX)(R8*2), R10 \
	BODY4 \
	LEAQ (SI)(R8*4), SI \
	SUBQ $4, CX \
	JMP  g4 \
g1: \
	TESTQ CX, CX \
	JLE   done \
	MOVQ  SI, AX \
	XORQ  DX, DX \
	CMPQ  DX, end+24(FP) \
	JGE   g1l \
g1v: \
	BODY1 \
	ADDQ $VB, AX \
	ADDQ $ACCB, DX \
	CMPQ DX, end+24(FP) \
	JLT  g1v \
g1l: \
	MOVQ lastb+32(FP), AX \
	ADDQ SI, AX \
	BODY1 \
	ADDQ R8, SI \
	DECQ CX \
	JMP  g1 \
done: \
	VZEROUPPER \
	RET

// AROWS: the row element-wise kernels, one row at a time across its
// channels; BODYL stores the last vector's new lanes only (MASK sets the
// mask up). DX is the byte offset 8·channel of the coefficients (end =
// ACCB·(nv−1), lastc = 8·last).
//
// Registers: SI the row, R8 ldb, CX rows left, AX the vector's address.
#define AROWS(BODY, BODYL, VB, ACCB, MASK) \
	MOVQ  x+0(FP), SI \
	MOVQ  ldb+8(FP), R8 \
	MOVQ  rows+16(FP), CX \
	MASK \
r1: \
	TESTQ CX, CX \
	JLE   done \
	MOVQ  SI, AX \
	XORQ  DX, DX \
	CMPQ  DX, end+24(FP) \
	JGE   r1l \
r1v: \
	BODY \
	ADDQ $VB, AX \
	ADDQ $ACCB, DX \
	CMPQ DX, end+24(FP) \
	JLT  r1v \
r1l: \
	MOVQ lastb+32(FP), AX \
	ADDQ SI, AX \
	MOVQ lastc+48(FP), DX \
	BODYL \
	ADDQ R8, SI \
	DECQ CX \
	JMP  r1 \
done: \
	VZEROUPPER \
	RET
