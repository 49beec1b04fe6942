// SPDX-License-Identifier: GPL-2.0
/* Programs the verifier must reject (or, after the series, accept): the mainline
 * exceptions_fail cases (JIT reference §3.5) with the series' changes (§7.4).
 * All are SEC("?tc") (loaded one by one) unless noted; the expected verdict and
 * message of each is in expected.json. */
#include "progs.h"

struct foo {
	long data;
	struct bpf_rb_node node;
};

struct timer_elem {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, struct timer_elem);
} timer_map SEC(".maps");

struct bpf_spin_lock lock private_data(A);
struct bpf_rb_root rbtree private_data(A) __contains(foo, node);

/* Exception callbacks of the wrong shape. */
__noinline void *exception_cb_bad_ret_type(u64 cookie)
{
	asm volatile("" ::: "memory");
	return NULL;
}

__noinline int exception_cb_bad_arg_0(void)
{
	return 0;
}

__noinline int exception_cb_bad_arg_2(int a, int b)
{
	return a + b;
}

__noinline int exception_cb_ok_arg_small(int a)
{
	return a + 1;
}

SEC("?tc") __exception_cb(exception_cb_bad_ret_type)
int reject_exception_cb_type_1(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 0;
}

SEC("?tc") __exception_cb(exception_cb_bad_arg_0)
int reject_exception_cb_type_2(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 0;
}

SEC("?tc") __exception_cb(exception_cb_bad_arg_2)
int reject_exception_cb_type_3(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 0;
}

SEC("?tc") __exception_cb(exception_cb_ok_arg_small)
int reject_exception_cb_type_4(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 0;
}

static __noinline int timer_cb(void *map, int *key, struct bpf_timer *timer)
{
	bpf_throw(0);
	return 0;
}

SEC("?tc")
int reject_async_callback_throw(struct __sk_buff *ctx)
{
	int key = 0;
	struct timer_elem *elem = bpf_map_lookup_elem(&timer_map, &key);

	if (!elem)
		return 0;
	bpf_timer_init(&elem->timer, &timer_map, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&elem->timer, timer_cb);
	return bpf_timer_start(&elem->timer, 0, 0);
}

SEC("?tc")
int reject_with_lock(struct __sk_buff *ctx)
{
	bpf_spin_lock(&lock);
	bpf_throw(0);
	return 0;
}

static __noinline int locked_throw(struct __sk_buff *ctx)
{
	bpf_spin_lock(&lock);
	if (ctx->len)
		bpf_throw(0);
	bpf_spin_unlock(&lock);
	return 0;
}

SEC("?tc")
int reject_subprog_with_lock(struct __sk_buff *ctx)
{
	return locked_throw(ctx);
}

SEC("?tc")
int reject_with_rcu_read_lock(struct __sk_buff *ctx)
{
	bpf_rcu_read_lock();
	bpf_throw(0);
	return 0;
}

static __noinline int maybe_throw(struct __sk_buff *ctx)
{
	if (ctx->len)
		bpf_throw(0);
	return 0;
}

SEC("?tc")
int reject_subprog_with_rcu_read_lock(struct __sk_buff *ctx)
{
	bpf_rcu_read_lock();
	return maybe_throw(ctx);
}

/* An rbtree `less` callback runs under the tree's lock and throws. */
static bool rbless(struct bpf_rb_node *a, const struct bpf_rb_node *b)
{
	bpf_throw(0);
	return true;
}

SEC("?tc")
int reject_with_rbtree_add_throw(struct __sk_buff *ctx)
{
	struct foo *f = bpf_obj_new(struct foo);

	if (!f)
		return 0;
	bpf_spin_lock(&lock);
	bpf_rbtree_add(&rbtree, &f->node, rbless);
	bpf_spin_unlock(&lock);
	return 0;
}

static int throwing_loop_cb(u32 i, void *data)
{
	bpf_throw(0);
	return 0;
}

static int throwing_loop_cb_diff(u32 i, void *data)
{
	if (i == 3)
		bpf_throw(7);
	return 0;
}

/* An object held in main across bpf_loop whose callback throws. */
SEC("?tc")
int reject_with_cb_reference(struct __sk_buff *ctx)
{
	struct foo *f = bpf_obj_new(struct foo);

	if (!f)
		return 0;
	bpf_loop(5, throwing_loop_cb, NULL, 0);
	bpf_obj_drop(f);
	return 0;
}

SEC("?tc")
int reject_with_cb(struct __sk_buff *ctx)
{
	bpf_loop(5, throwing_loop_cb, NULL, 0);
	return 0;
}

static __noinline int alloc_and_throw(struct __sk_buff *ctx)
{
	struct foo *f = bpf_obj_new(struct foo);

	if (!f)
		return 0;
	bpf_throw(0);
	return 0;
}

/* A static subprog allocates, NULL-checks and throws: accepted after the series
 * (nested-frame exceptional exits are not leak-checked). */
SEC("?tc")
int reject_with_subprog_reference(struct __sk_buff *ctx)
{
	return alloc_and_throw(ctx) + 1;
}

__noinline int exception_cb_throws(u64 cookie)
{
	bpf_throw(cookie);
	return 0;
}

SEC("?tc") __exception_cb(exception_cb_throws)
int reject_throwing_exception_cb(struct __sk_buff *ctx)
{
	return 0;
}

__noinline int exception_cb_direct(u64 cookie)
{
	return cookie + 1;
}

__noinline int global_calls_cb(struct __sk_buff *ctx)
{
	return exception_cb_direct(ctx->len);
}

static __noinline int static_calls_cb(struct __sk_buff *ctx)
{
	return exception_cb_direct(ctx->len) + 1;
}

/* The exception callback may not be called as an ordinary function. */
SEC("?tc") __exception_cb(exception_cb_direct)
int reject_exception_cb_call_global_func(struct __sk_buff *ctx)
{
	return global_calls_cb(ctx);
}

SEC("?tc") __exception_cb(exception_cb_direct)
int reject_exception_cb_call_static_func(struct __sk_buff *ctx)
{
	return static_calls_cb(ctx);
}

__noinline int exception_cb_first(u64 cookie)
{
	return 1;
}

__noinline int exception_cb_second(u64 cookie)
{
	return 2;
}

SEC("?tc") __exception_cb(exception_cb_first) __exception_cb(exception_cb_second)
int reject_multiple_exception_cb(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 16;
}

__noinline int exception_cb_unknown_ret(u64 cookie)
{
	return cookie + 64;
}

/* fentry programs must return 0: an unknown scalar from the callback is refused. */
SEC("?fentry/bpf_check") __exception_cb(exception_cb_unknown_ret)
int reject_set_exception_cb_bad_ret1(void *ctx)
{
	bpf_throw(0);
	return 0;
}

/* With the default callback the cookie (64) is the fentry program's return value. */
SEC("?fentry/bpf_check")
int reject_set_exception_cb_bad_ret2(void *ctx)
{
	bpf_throw(64);
	return 0;
}

SEC("?tc")
int reject_exception_throw_cb(struct __sk_buff *ctx)
{
	bpf_loop(5, throwing_loop_cb, NULL, 0);
	return 0;
}

SEC("?tc")
int reject_exception_throw_cb_diff(struct __sk_buff *ctx)
{
	if (ctx->protocol)
		bpf_loop(5, throwing_loop_cb, NULL, 0);
	else
		bpf_loop(5, throwing_loop_cb_diff, NULL, 0);
	return 0;
}

/* Patch 03 of the series: a throwing global subprog called while an object is held. */
__noinline int throwing_global_subprog(struct __sk_buff *ctx)
{
	if (ctx->len)
		bpf_throw(0);
	return 0;
}

SEC("?tc")
int reject_exception_throw_ref_call_throwing_global(struct __sk_buff *ctx)
{
	struct foo *f = bpf_obj_new(struct foo);

	if (!f)
		return 0;
	if (ctx->protocol)
		throwing_global_subprog(ctx);
	bpf_obj_drop(f);
	return 0;
}

LICENSE_GPL;
