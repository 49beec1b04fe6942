; Two call sites of one throwing subprog: at the first main holds nothing (R6-R9 known
; zero, no stack), so its descriptor is empty; at the second it holds an object in R6.
; The unwinder needs a descriptor at both (a missing one is an error).
.struct obj 8
main:
	r6 = 0
	r7 = 0
	r8 = 0
	r9 = 0
	r1 = *(u32 *)(r1 + 0)
	if r1 == 0 goto .Lsecond
	call s1
	r0 = 0
	exit
.Lsecond:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r6 = r0
	call s1
	r1 = r6
	call bpf_obj_drop_impl
.Lout:
	r0 = 0
	exit
s1:
	r1 = 3
	call bpf_throw
	r0 = 0
	exit
