; exceptions_cleanup_fail.c reject_with_reference: the only copy of the object is in a
; caller-saved register at the throw, so nothing can release it.
.struct obj 8

main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r1 = 0
	call bpf_throw
.Lout:
	r0 = 0
	exit
