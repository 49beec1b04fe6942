// SPDX-License-Identifier: GPL-2.0
/* The series' cleanup cases the verifier must reject (§7.3); all SEC("?tc"). Either a
 * reference is only in a caller-saved register at the throw ("Unreleased reference")
 * or two paths reach one throw with different resources in one place (a frame
 * descriptor merge failure). */
#include "cleanup_common.h"

struct foo {
	int i;
};

/* The object lives only in R0-R5 at the throw. */
SEC("?tc")
int reject_with_reference(struct __sk_buff *ctx)
{
	struct foo *f = bpf_obj_new(struct foo);

	if (!f)
		return 0;
	bpf_throw(0);
	return 0;
}

/* A ringbuf record on one path, an object on the other, same register at the throw. */
SEC("?tc")
int reject_slot_with_distinct_ptr(struct __sk_buff *ctx)
{
	void *p;

	if (ctx->len)
		p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	else
		p = bpf_obj_new(struct foo);
	bpf_throw(0);
	return !p;
}

SEC("?tc")
int reject_slot_with_distinct_ptr_old(struct __sk_buff *ctx)
{
	void *p;

	if (ctx->len)
		p = bpf_obj_new(struct foo);
	else
		p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	bpf_throw(0);
	return !p;
}

/* A scalar on one path, a record on the other. */
SEC("?tc")
int reject_slot_with_misc_vs_ptr(struct __sk_buff *ctx)
{
	void *p = (void *)bpf_ktime_get_ns();

	if (ctx->protocol)
		p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	bpf_throw(0);
	return !p;
}

/* The record is overwritten by a scalar on one path: its reference is lost. */
SEC("?tc")
int reject_slot_with_misc_vs_ptr_old(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);

	if (ctx->protocol)
		p = (void *)bpf_ktime_get_ns();
	bpf_throw(0);
	return !p;
}

/* R6 holds an uninitialised stack read on one path, a record on the other. */
SEC("?tc")
__naked int reject_slot_with_invalid_vs_ptr(void)
{
	asm volatile(
		"r7 = *(u32 *)(r1 + 0);"
		"r6 = *(u64 *)(r10 - 8);"
		"if r7 == 0 goto 1f;"
		"r1 = %[ringbuf] ll;"
		"r2 = 8;"
		"r3 = 0;"
		"call %[bpf_ringbuf_reserve];"
		"r6 = r0;"
		"1:"
		"r0 = 0;"
		"r1 = 0;"
		"call bpf_throw;"
		"r0 = 0;"
		"exit;"
		:: __imm_addr(ringbuf), __imm(bpf_ringbuf_reserve)
		: __clobber_all);
}

SEC("?tc")
__naked int reject_slot_with_invalid_vs_ptr_old(void)
{
	asm volatile(
		"r7 = *(u32 *)(r1 + 0);"
		"r1 = %[ringbuf] ll;"
		"r2 = 8;"
		"r3 = 0;"
		"call %[bpf_ringbuf_reserve];"
		"r6 = r0;"
		"if r7 == 0 goto 1f;"
		"r6 = *(u64 *)(r10 - 8);"
		"1:"
		"r0 = 0;"
		"r1 = 0;"
		"call bpf_throw;"
		"r0 = 0;"
		"exit;"
		:: __imm_addr(ringbuf), __imm(bpf_ringbuf_reserve)
		: __clobber_all);
}

/* fp-8 holds a record, then zero on one path: the record is lost. */
SEC("?tc")
__naked int reject_slot_with_zero_vs_ptr(void)
{
	asm volatile(
		"r7 = *(u32 *)(r1 + 0);"
		"r1 = %[ringbuf] ll;"
		"r2 = 8;"
		"r3 = 0;"
		"call %[bpf_ringbuf_reserve];"
		"*(u64 *)(r10 - 8) = r0;"
		"r0 = 0;"
		"if r7 != 0 goto 1f;"
		"*(u64 *)(r10 - 8) = r0;"
		"1:"
		"r1 = 0;"
		"call bpf_throw;"
		"r0 = 0;"
		"exit;"
		:: __imm_addr(ringbuf), __imm(bpf_ringbuf_reserve)
		: __clobber_all);
}

LICENSE_GPL;
