; Ten independent branches refining one scalar; r7's constants are never relied on.
.prog_type tc
main:
	r6 = *(u32 *)(r1 + 0)
	r7 = 0
	if r6 > 1 goto +1
	r7 = 1
	if r6 > 2 goto +1
	r7 = 2
	if r6 > 3 goto +1
	r7 = 3
	if r6 > 4 goto +1
	r7 = 4
	if r6 > 5 goto +1
	r7 = 5
	if r6 > 6 goto +1
	r7 = 6
	if r6 > 7 goto +1
	r7 = 7
	if r6 > 8 goto +1
	r7 = 8
	if r6 > 9 goto +1
	r7 = 9
	if r6 > 10 goto +1
	r7 = 10
	*(u64 *)(r10 - 8) = r7
	r0 = 0
	exit
