; Precision through a zero stored as slot types: a known-zero register written at an
; offset that is not a spill makes STACK_ZERO bytes, which backtracking cannot follow, so
; the kernel marks the register precise at the store. The path with 1 must not be pruned.
.prog_type tc
main:
	r6 = *(u32 *)(r1 + 0)
	r5 = 1
	if r6 > 100 goto .Ljoin
	r5 = 0
.Ljoin:
	r8 = 0
	r8 += 1
	r8 += 1
	r8 += 1
	if r8 == 5 goto .Lpad
	r8 += 1
.Lpad:
	*(u8 *)(r10 - 1) = r5
	r2 = *(u8 *)(r10 - 1)
	if r2 != 0 goto .Lbad
	r0 = 0
	exit
.Lbad:
	r0 = r4
	exit
