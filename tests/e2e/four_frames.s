; The series' 4-frame example (exceptions-cleanup-series.md §3.8): main -> s1 -> s2 ->
; throw trampoline, s1 uses R6,R7 and s2 uses R8,R9. main holds objects A-D in R6-R9,
; s1 holds E,F in R6,R7 and s2 holds G,H in R8,R9 when it throws. The unwinder must
; recover every frame's R6-R9 through the prologue pushes and release all eight.
.struct obj 8

main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r6 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lfree6
	r7 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lfree7
	r8 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lfree8
	r9 = r0
	call s1
	r1 = r9
	call bpf_obj_drop_impl
.Lfree8:
	r1 = r8
	call bpf_obj_drop_impl
.Lfree7:
	r1 = r7
	call bpf_obj_drop_impl
.Lfree6:
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
	r6 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lfree6
	r7 = r0
	call s2
	r1 = r7
	call bpf_obj_drop_impl
.Lfree6:
	r1 = r6
	call bpf_obj_drop_impl
.Lnone:
	r0 = 0
	exit

s2:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lnone
	r8 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lfree8
	r9 = r0
	r1 = 42
	call bpf_throw
	r1 = r9
	call bpf_obj_drop_impl
.Lfree8:
	r1 = r8
	call bpf_obj_drop_impl
.Lnone:
	r0 = 0
	exit
