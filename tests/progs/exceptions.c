// SPDX-License-Identifier: GPL-2.0
/* The mainline exceptions runtime cases (JIT reference §3.3): every program is a tc
 * program run once with a pkt_v4-like ctx (len 74, protocol htons(ETH_P_IP)). The
 * expected return value of each is in expected.json. */
#include "progs.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(int));
	__uint(value_size, sizeof(int));
} jmp_table SEC(".maps");

/* Subprogs of the unwinding cases. */
static __noinline int static_func(u64 i)
{
	bpf_throw(32);
	return i;
}

__noinline int global2static_simple(u64 i)
{
	static_func(i + 2);
	return i - 1;
}

__noinline int global2static(u64 i)
{
	if (i == ETH_P_IP)
		bpf_throw(16);
	return static_func(i);
}

static __noinline int static2global(u64 i)
{
	return global2static(i) + i;
}

SEC("tc")
int exception_throw_always_1(struct __sk_buff *ctx)
{
	bpf_throw(64);
	return 0;
}

/* The throw is in a static subprog called from a global one: the global's
 * `return i - 1` is never reached. */
SEC("tc")
int exception_throw_always_2(struct __sk_buff *ctx)
{
	return global2static_simple(ctx->protocol);
}

SEC("tc")
int exception_throw_unwind_1(struct __sk_buff *ctx)
{
	return static2global(bpf_ntohs(ctx->protocol));
}

SEC("tc")
int exception_throw_unwind_2(struct __sk_buff *ctx)
{
	return static2global(bpf_ntohs(ctx->protocol) - 1);
}

SEC("tc")
int exception_throw_default(struct __sk_buff *ctx)
{
	bpf_throw(0);
	return 1;
}

SEC("tc")
int exception_throw_default_value(struct __sk_buff *ctx)
{
	bpf_throw(5);
	return 1;
}

/* Tail-call target: throws 16, which becomes its (and the tail-calling subprog's)
 * return value. */
SEC("tc")
int exception_tail_call_target(struct __sk_buff *ctx)
{
	bpf_throw(16);
	return 0;
}

__noinline int exception_tail_call_subprog(struct __sk_buff *ctx)
{
	volatile int ret = 10;

	bpf_tail_call(ctx, &jmp_table, 0);
	return ret;
}

SEC("tc")
int exception_tail_call(struct __sk_buff *ctx)
{
	volatile int ret = 0;

	ret = exception_tail_call_subprog(ctx);
	return ret + 8;
}

__noinline int exception_ext_global(struct __sk_buff *ctx)
{
	volatile int ret = 0;

	return ret;
}

static __noinline int exception_ext_static(struct __sk_buff *ctx)
{
	return exception_ext_global(ctx);
}

SEC("tc")
int exception_ext(struct __sk_buff *ctx)
{
	return exception_ext_static(ctx);
}

__noinline int exception_cb_mod_global(u64 cookie)
{
	volatile int ret = 0;

	return ret;
}

/* A custom exception callback that calls a global function: 0 + 25 + 10 = 35. */
__noinline int exception_cb_mod(u64 cookie)
{
	return exception_cb_mod_global(cookie) + cookie + 10;
}

SEC("tc") __exception_cb(exception_cb_mod)
int exception_ext_mod_cb_runtime(struct __sk_buff *ctx)
{
	bpf_throw(25);
	return 0;
}

static __noinline int subprog(struct __sk_buff *ctx)
{
	volatile int ret = 0;

	return ret;
}

__noinline int global_subprog(struct __sk_buff *ctx)
{
	volatile int ret = 0;

	return ret;
}

static __noinline int throwing_subprog(struct __sk_buff *ctx)
{
	if (ctx->len)
		bpf_throw(0);
	return 0;
}

__noinline int throwing_global_subprog(struct __sk_buff *ctx)
{
	if (ctx->len)
		bpf_throw(0);
	return 0;
}

/* protocol reads as 8, so the default case throws 1. */
SEC("tc")
int exception_throw_subprog(struct __sk_buff *ctx)
{
	switch (ctx->protocol) {
	case 1:
		return subprog(ctx);
	case 2:
		return global_subprog(ctx);
	case 3:
		return throwing_subprog(ctx);
	case 4:
		return throwing_global_subprog(ctx);
	default:
		break;
	}
	bpf_throw(1);
	return 0;
}

__weak void throw_11(void)
{
	bpf_throw(11);
}

SEC("tc")
int exception_throw_from_void_global(struct __sk_buff *ctx)
{
	throw_11();
	return 0;
}

/* Assertions in global functions: each copies its argument into a volatile and
 * asserts on it; the plain form throws 0, the _with form throws cookie + 100. A program
 * returns the function's result + 1, so a passing assertion returns 1. */
#define ASSERT_GFUNC(name, op, rhs)                                             \
	__noinline int assert_##name##_gfunc(s64 c)                             \
	{                                                                       \
		volatile s64 cookie = c;                                        \
		bpf_assert(bpf_cmp_unlikely(cookie, op, rhs));                  \
		return 0;                                                       \
	}                                                                       \
	__noinline int assert_##name##_gfunc_with(s64 c)                        \
	{                                                                       \
		volatile s64 cookie = c;                                        \
		bpf_assert_with(bpf_cmp_unlikely(cookie, op, rhs), cookie + 100); \
		return 0;                                                       \
	}

#define ASSERT_PROG(tag, name, with, cookie)                                    \
	SEC("tc")                                                               \
	int exception##tag##assert_##name##_gfunc##with(struct __sk_buff *ctx)  \
	{                                                                       \
		return assert_##name##_gfunc##with(cookie) + 1;                 \
	}

#define ASSERT_CASES(name, op, rhs, good, bad)                                  \
	ASSERT_GFUNC(name, op, rhs)                                             \
	ASSERT_PROG(_, name, , good)                                            \
	ASSERT_PROG(_, name, _with, good)                                       \
	ASSERT_PROG(_bad_, name, , bad)                                         \
	ASSERT_PROG(_bad_, name, _with, bad)

ASSERT_CASES(nz, !=, 0, 5, 0)
ASSERT_CASES(zero, ==, 0, 0, 5)
ASSERT_CASES(neg, <, 0, -100, 100)
ASSERT_CASES(pos, >, 0, 100, -100)
ASSERT_CASES(negeq, <=, -1, -1, 1)
ASSERT_CASES(poseq, >=, 1, 1, -1)

/* Range assertions on the (unsigned) time. */
SEC("tc")
int exception_assert_range(struct __sk_buff *ctx)
{
	u64 time = bpf_ktime_get_ns();

	bpf_assert_range(time, 0, ~0ULL);
	return 1;
}

SEC("tc")
int exception_assert_range_with(struct __sk_buff *ctx)
{
	u64 time = bpf_ktime_get_ns();

	bpf_assert_range_with(time, 0, ~0ULL, 10);
	return 1;
}

SEC("tc")
int exception_bad_assert_range(struct __sk_buff *ctx)
{
	u64 time = bpf_ktime_get_ns();

	bpf_assert_range(time, -100, 100);
	return 1;
}

SEC("tc")
int exception_bad_assert_range_with(struct __sk_buff *ctx)
{
	u64 time = bpf_ktime_get_ns();

	bpf_assert_range_with(time, -1000, 1000, 10);
	return 1;
}

LICENSE_GPL;
