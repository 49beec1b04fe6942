// SPDX-License-Identifier: GPL-2.0
/* Programs inside the walking skeleton's verifier subset: ctx->len reads,
 * bpf_obj_new/bpf_obj_drop, static and global subprogs, bpf_throw and a custom
 * exception callback. Each must verify, JIT and run with 0 leaks. */
#include "progs.h"

struct node {
	long value;
	long spare;
};

/* The packet length (74 for the default ctx). */
SEC("tc")
int basic_ctx_len(struct __sk_buff *ctx)
{
	return ctx->len;
}

/* Allocate, write, read back, drop: returns len. */
SEC("tc")
int basic_obj_new_drop(struct __sk_buff *ctx)
{
	struct node *n = bpf_obj_new(struct node);
	long v;

	if (!n)
		return 0;
	n->value = ctx->len;
	v = n->value;
	bpf_obj_drop(n);
	return v;
}

static __noinline int add_three(int x)
{
	return x + 3;
}

/* A static subprog: len + 3 = 77. */
SEC("tc")
int basic_static_subprog(struct __sk_buff *ctx)
{
	return add_three(ctx->len);
}

__noinline int basic_global_double(int x)
{
	return x * 2;
}

/* A global subprog: 2 * len = 148. */
SEC("tc")
int basic_global_subprog(struct __sk_buff *ctx)
{
	return basic_global_double(ctx->len);
}

/* Throw from main with the default callback: returns the cookie 7. */
SEC("tc")
int basic_throw(struct __sk_buff *ctx)
{
	bpf_throw(7);
	return 1;
}

static __noinline int static_throws(int x)
{
	if (x > 10)
		bpf_throw(21);
	return x;
}

/* Throw two frames deep through a static subprog: returns 21. */
SEC("tc")
int basic_throw_static(struct __sk_buff *ctx)
{
	return static_throws(ctx->len) + 1;
}

__noinline int basic_global_throws(int x)
{
	if (x)
		bpf_throw(0xeB9F);
	return 0;
}

/* main holds an object across a call to a global subprog that throws; the unwinder
 * releases it from main's frame (callee-saved register or stack slot). */
SEC("tc")
int basic_throw_releases_obj(struct __sk_buff *ctx)
{
	struct node *n = bpf_obj_new(struct node);
	int ret;

	if (!n)
		return 1;
	ret = basic_global_throws(ctx->len);
	bpf_obj_drop(n);
	return ret;
}

__noinline int basic_cb(__u64 cookie)
{
	return cookie + 10;
}

/* A custom exception callback: throws 5, the callback returns 15. */
SEC("tc") __exception_cb(basic_cb)
int basic_exception_cb(struct __sk_buff *ctx)
{
	if (ctx->len)
		bpf_throw(5);
	return 0;
}

LICENSE_GPL;
