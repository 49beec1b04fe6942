; bpf-unwind demo: a throw three frames deep releases four objects.
;
; main holds object #1 in R6 and object #2 on its stack, then calls the static
; subprog s1, which holds object #3 in R7 and calls the global subprog gsub.
; gsub allocates object #4, keeps it in R6 and throws 0xeb9f. The verifier
; records a frame descriptor for every frame at its call site (s1 and main
; through the exception path of the throw-reachable global call, gsub at its
; throw); the unwinder walks trampoline -> gsub -> s1 -> main, recovers each
; frame's R6-R9 from the callee prologues' pushes and drops all four objects.
; The default exception callback returns the cookie.

.struct obj 16
.global gsub

main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r6 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Ldrop_r6
	*(u64 *)(r10 - 8) = r0
	call s1
	r1 = *(u64 *)(r10 - 8)
	call bpf_obj_drop_impl
.Ldrop_r6:
	r1 = r6
	call bpf_obj_drop_impl
.Lout:
	r0 = 0
	exit

s1:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lnone
	r7 = r0
	call gsub
	r1 = r7
	call bpf_obj_drop_impl
.Lnone:
	r0 = 0
	exit

gsub:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lnone
	r6 = r0
	r1 = 0xeb9f
	call bpf_throw
	r1 = r6
	call bpf_obj_drop_impl
.Lnone:
	r0 = 0
	exit
