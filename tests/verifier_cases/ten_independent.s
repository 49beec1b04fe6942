.prog_type tc
; Ten independent branches on fresh unknowns, each path writing other registers and
; stack slots: 1,024 combinations without precision and liveness, a few states with them.
main:
	r6 = r1
	r2 = *(u32 *)(r6 + 0)
	if r2 > 0 goto .Lskip0
	r7 = 1
	*(u64 *)(r10 - 8) = r7
.Lskip0:
	r2 = *(u32 *)(r6 + 4)
	if r2 > 3 goto .Lskip1
	r8 = 2
	*(u64 *)(r10 - 16) = r8
.Lskip1:
	r2 = *(u32 *)(r6 + 8)
	if r2 > 6 goto .Lskip2
	r9 = 3
	*(u64 *)(r10 - 24) = r9
.Lskip2:
	r2 = *(u32 *)(r6 + 12)
	if r2 > 9 goto .Lskip3
	r7 = 4
	*(u64 *)(r10 - 32) = r7
.Lskip3:
	r2 = *(u32 *)(r6 + 0)
	if r2 > 12 goto .Lskip4
	r8 = 5
	*(u64 *)(r10 - 40) = r8
.Lskip4:
	r2 = *(u32 *)(r6 + 4)
	if r2 > 15 goto .Lskip5
	r9 = 6
	*(u64 *)(r10 - 48) = r9
.Lskip5:
	r2 = *(u32 *)(r6 + 8)
	if r2 > 18 goto .Lskip6
	r7 = 7
	*(u64 *)(r10 - 56) = r7
.Lskip6:
	r2 = *(u32 *)(r6 + 12)
	if r2 > 21 goto .Lskip7
	r8 = 8
	*(u64 *)(r10 - 64) = r8
.Lskip7:
	r2 = *(u32 *)(r6 + 0)
	if r2 > 24 goto .Lskip8
	r9 = 9
	*(u64 *)(r10 - 72) = r9
.Lskip8:
	r2 = *(u32 *)(r6 + 4)
	if r2 > 27 goto .Lskip9
	r7 = 10
	*(u64 *)(r10 - 80) = r7
.Lskip9:
	r0 = 0
	exit
