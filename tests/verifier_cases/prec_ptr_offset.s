; Precision through pointer arithmetic: r7 is 0 on one path and 16 on the other; the path
; with 16 writes to fp+0. Without precision the second path would be pruned at the join.
.prog_type tc
main:
	r6 = *(u32 *)(r1 + 0)
	r7 = 16
	r8 = 0
	r9 = 0
	if r6 > 100 goto .Ll1
	r7 = 0
.Ll1:
	r8 += 1
	r9 += 1
	r8 += 1
	r9 += 1
	if r8 == 5 goto .Ll2
	r8 += 1
.Ll2:
	r9 += 1
	r1 = r10
	r1 += -16
	r1 += r7
	*(u64 *)(r1 + 0) = 1
	r0 = 0
	exit
