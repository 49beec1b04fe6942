.prog_type socket_filter

jumps:
.L0:
	if r1 == -3 goto .L0
	if r2 == r3 goto .L48
	if r1 != -3 goto .L0
	if r2 != r3 goto .L48
	if r1 > -3 goto .L0
	if r2 > r3 goto .L48
	if r1 >= -3 goto .L0
	if r2 >= r3 goto .L48
	if r1 < -3 goto .L0
	if r2 < r3 goto .L48
	if r1 <= -3 goto .L0
	if r2 <= r3 goto .L48
	if r1 s> -3 goto .L0
	if r2 s> r3 goto .L48
	if r1 s>= -3 goto .L0
	if r2 s>= r3 goto .L48
	if r1 s< -3 goto .L0
	if r2 s< r3 goto .L48
	if r1 s<= -3 goto .L0
	if r2 s<= r3 goto .L48
	if r1 & -3 goto .L0
	if r2 & r3 goto .L48
	if w1 == -3 goto .L0
	if w2 == w3 goto .L48
	if w1 != -3 goto .L0
	if w2 != w3 goto .L48
	if w1 > -3 goto .L0
	if w2 > w3 goto .L48
	if w1 >= -3 goto .L0
	if w2 >= w3 goto .L48
	if w1 < -3 goto .L0
	if w2 < w3 goto .L48
	if w1 <= -3 goto .L0
	if w2 <= w3 goto .L48
	if w1 s> -3 goto .L0
	if w2 s> w3 goto .L48
	if w1 s>= -3 goto .L0
	if w2 s>= w3 goto .L48
	if w1 s< -3 goto .L0
	if w2 s< w3 goto .L48
	if w1 s<= -3 goto .L0
	if w2 s<= w3 goto .L48
	if w1 & -3 goto .L0
	if w2 & w3 goto .L48
	if r1 == 2147483647 goto .L48
	goto .L48
	gotol .L0
	goto .L0
.L48:
	r0 = 1
	exit
