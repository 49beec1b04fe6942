; A loop writes a byte of a slot no path reads again, then another loop: the dead slot
; must be forgotten in explored states, or every exit of the first loop explores the second.
.prog_type tc
main:
	r0 = *(u32 *)(r1 + 0)
	r2 = 0
	*(u64 *)(r10 - 8) = 0
	r7 = r0
	r7 &= 7
.L1:
	if r7 == 0 goto .L2
	*(u8 *)(r10 - 1) = r2
	r7 -= 1
	goto .L1
.L2:
	r7 = r0
	r7 &= 15
.L3:
	r0 += 0
	r7 -= 1
	if r7 s> 0 goto .L3
	r0 = 0
	exit
