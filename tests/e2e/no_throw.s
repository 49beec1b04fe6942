; A program that allocates, stores through the object, drops it and returns normally.
.struct obj 16

main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lnull
	r6 = r0
	r1 = 35
	*(u64 *)(r6 + 8) = r1
	r7 = *(u64 *)(r6 + 8)
	r1 = r6
	call bpf_obj_drop_impl
	r0 = r7
	r0 += 7
	exit
.Lnull:
	r0 = 1
	exit
