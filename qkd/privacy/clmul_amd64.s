#include "textflag.h"

// func mulBaseAsm(z, x, y []uint64)
// z[0 : len(x)+len(y)] = x·y over GF(2)[t] (words little-endian), product
// scanning: for each output word k accumulate clmul(x[i], y[k−i]) over i in
// two XMM accumulators (inner loop unrolled four times), then add the high
// half of the previous word's sum.
// Requires len(x) ≥ 1, len(y) ≥ 1, len(z) ≥ len(x)+len(y).
TEXT ·mulBaseAsm(SB), NOSPLIT, $0-72
	MOVQ z_base+0(FP), DI
	MOVQ x_len+32(FP), CX
	MOVQ y_base+48(FP), DX
	MOVQ y_len+56(FP), R8
	LEAQ -1(CX)(R8*1), R12 // number of output words before the last
	XORQ R9, R9            // k
	XORQ R13, R13          // carry

kloop:
	CMPQ R9, R12
	JGE  kdone

	// i0 = max(0, k−ly+1); iend = min(k+1, lx)
	MOVQ R9, R10
	SUBQ R8, R10
	INCQ R10
	XORQ AX, AX
	CMPQ R10, AX
	CMOVQLT AX, R10
	LEAQ 1(R9), R11
	CMPQ R11, CX
	CMOVQGT CX, R11
	SUBQ R10, R11          // count
	MOVQ x_base+24(FP), SI
	LEAQ (SI)(R10*8), SI   // &x[i0]
	MOVQ R9, BX
	SUBQ R10, BX
	LEAQ (DX)(BX*8), BX    // &y[k−i0]
	PXOR X3, X3
	PXOR X6, X6

loop4:
	CMPQ R11, $4
	JLT  loop1
	MOVQ (SI), X0
	MOVQ (BX), X1
	PCLMULQDQ $0x00, X1, X0
	PXOR X0, X3
	MOVQ 8(SI), X4
	MOVQ -8(BX), X5
	PCLMULQDQ $0x00, X5, X4
	PXOR X4, X6
	MOVQ 16(SI), X7
	MOVQ -16(BX), X8
	PCLMULQDQ $0x00, X8, X7
	PXOR X7, X3
	MOVQ 24(SI), X9
	MOVQ -24(BX), X10
	PCLMULQDQ $0x00, X10, X9
	PXOR X9, X6
	ADDQ $32, SI
	SUBQ $32, BX
	SUBQ $4, R11
	JMP  loop4

loop1:
	TESTQ R11, R11
	JEQ   idone
	MOVQ (SI), X0
	MOVQ (BX), X1
	PCLMULQDQ $0x00, X1, X0
	PXOR X0, X3
	ADDQ $8, SI
	SUBQ $8, BX
	DECQ R11
	JMP  loop1

idone:
	PXOR   X6, X3
	MOVQ   X3, AX
	PEXTRQ $1, X3, BX
	XORQ   R13, AX
	MOVQ   AX, (DI)(R9*8)
	MOVQ   BX, R13
	INCQ   R9
	JMP    kloop

kdone:
	MOVQ R13, (DI)(R9*8)
	RET

// func mulRangeAsm(z, x, y []uint64, k0, k1 int)
// z[0 : k1−k0] = words k0 … k1−1 of x·y over GF(2)[t] (0 ≤ k0 < k1 ≤
// len(x)+len(y)); the scan starts one word early for the carry.
TEXT ·mulRangeAsm(SB), NOSPLIT, $0-88
	MOVQ z_base+0(FP), DI
	MOVQ x_len+32(FP), CX
	MOVQ y_base+48(FP), DX
	MOVQ y_len+56(FP), R8
	MOVQ k0+72(FP), R9
	MOVQ k1+80(FP), R12
	XORQ R13, R13          // carry
	TESTQ R9, R9
	JEQ  rkloop
	DECQ R9                // start one word early for the carry

rkloop:
	CMPQ R9, R12
	JGE  rkdone

	MOVQ R9, R10
	SUBQ R8, R10
	INCQ R10
	XORQ AX, AX
	CMPQ R10, AX
	CMOVQLT AX, R10
	LEAQ 1(R9), R11
	CMPQ R11, CX
	CMOVQGT CX, R11
	PXOR X3, X3
	PXOR X6, X6
	CMPQ R10, R11
	JGE  ridone
	SUBQ R10, R11          // count
	MOVQ x_base+24(FP), SI
	LEAQ (SI)(R10*8), SI
	MOVQ R9, BX
	SUBQ R10, BX
	LEAQ (DX)(BX*8), BX

rloop4:
	CMPQ R11, $4
	JLT  rloop1
	MOVQ (SI), X0
	MOVQ (BX), X1
	PCLMULQDQ $0x00, X1, X0
	PXOR X0, X3
	MOVQ 8(SI), X4
	MOVQ -8(BX), X5
	PCLMULQDQ $0x00, X5, X4
	PXOR X4, X6
	MOVQ 16(SI), X7
	MOVQ -16(BX), X8
	PCLMULQDQ $0x00, X8, X7
	PXOR X7, X3
	MOVQ 24(SI), X9
	MOVQ -24(BX), X10
	PCLMULQDQ $0x00, X10, X9
	PXOR X9, X6
	ADDQ $32, SI
	SUBQ $32, BX
	SUBQ $4, R11
	JMP  rloop4

rloop1:
	TESTQ R11, R11
	JEQ   ridone
	MOVQ (SI), X0
	MOVQ (BX), X1
	PCLMULQDQ $0x00, X1, X0
	PXOR X0, X3
	ADDQ $8, SI
	SUBQ $8, BX
	DECQ R11
	JMP  rloop1

ridone:
	PXOR   X6, X3
	MOVQ   X3, AX
	PEXTRQ $1, X3, BX
	XORQ   R13, AX
	MOVQ   BX, R13
	MOVQ   k0+72(FP), R10
	CMPQ   R9, R10
	JLT    rnext
	MOVQ   R9, R11
	SUBQ   R10, R11
	MOVQ   AX, (DI)(R11*8)

rnext:
	INCQ R9
	JMP  rkloop

rkdone:
	RET
