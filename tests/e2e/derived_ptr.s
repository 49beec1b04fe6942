; A pointer derived from an object (obj + 8) is all the frame holds at the throw. The
; kernel's frame-desc entry has no offset, so the series would release the derived
; address; the entry keeps the offset and cleanup releases the object at its start.
.struct obj 16
main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r6 = r0
	r6 += 8
	r1 = 1
	call bpf_throw
	r6 += -8
	r1 = r6
	call bpf_obj_drop_impl
.Lout:
	r0 = 0
	exit
