; Precision through a static call: the callee's R0 depends on its argument and becomes a
; stack offset in the caller.
.prog_type tc
main:
	r6 = *(u32 *)(r1 + 0)
	r1 = 1
	if r6 > 100 goto .Ll1
	r1 = 0
.Ll1:
	r8 = 0
	r8 += 1
	r8 += 1
	if r8 == 5 goto .Ll2
	r8 += 1
.Ll2:
	call pick
	r1 = r10
	r1 += -16
	r1 += r0
	*(u64 *)(r1 + 0) = 1
	r0 = 0
	exit
pick:
	r0 = 8
	if r1 == 0 goto .Lout
	r0 = 16
.Lout:
	exit
