; Precision through a spill and a fill: the value decides a branch after the join.
.prog_type tc
main:
	r6 = *(u32 *)(r1 + 0)
	r7 = 1
	if r6 > 100 goto .Ll1
	r7 = 0
.Ll1:
	*(u64 *)(r10 - 8) = r7
	r8 = 0
	r8 += 1
	r8 += 1
	r8 += 1
	if r8 == 5 goto .Ll2
	r8 += 1
.Ll2:
	r8 += 1
	r6 = *(u64 *)(r10 - 8)
	if r6 == 1 goto .Lbad
	r0 = 0
	exit
.Lbad:
	r0 = r5
	exit
