.prog_type tc
.license Dual BSD/GPL
.struct node 16
.struct pair 8
.struct big 4096 7
.global main
.global helper_global
.exception_callback exc_cb

main:
	r6 = r1
	r1 = node ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 != 0 goto .L8
	r0 = 1
	exit
.L8:
	r7 = r0
	r1 = r6
	call static_sub
	if r0 == 0 goto .L17
	r1 = r7
	r2 = 0
	call bpf_obj_drop_impl
	r0 = 2
	exit
.L17:
	r1 = big ll
	r1 = pair ll
	r2 = static_sub ll
	call 1
	call 4294
	call kfunc(77)
	call helper_global
	r1 = 7
	call bpf_throw
	exit

static_sub:
	r0 = r1
	r0 &= 1
	call helper_global
	exit

helper_global:
	r0 = 0
	exit

exc_cb:
	r0 = r1
	r0 += 100
	exit
