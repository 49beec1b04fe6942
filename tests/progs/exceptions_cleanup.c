// SPDX-License-Identifier: GPL-2.0
/* The series' runtime cleanup cases (§7.2): each program acquires resources, marks
 * them in `hashmap` (or counts them in `res_count`) and throws VAL; the fentry program
 * on bpf_cleanup_resource unmarks every resource the unwinder releases, and
 * exceptions_cleanup_check returns what is left (expected 0). All must load. */
#include "cleanup_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, int);
	__type(value, struct bpf_resource);
} hashmap SEC(".maps");

bool only_count;
int res_count;
const volatile bool always_false = false;

struct foo {
	int i;
};

/* Record one resource: the key is the low 32 bits of the pointer value. */
static __always_inline void mark_resource(void *ptr, int kind)
{
	u64 key = (u64)ptr;
	struct bpf_resource res = { .type = kind };

	res_count++;
	bpf_map_update_elem(&hashmap, &key, &res, BPF_ANY);
}

static __always_inline int kind_of_spill(int spill_type)
{
	switch (spill_type) {
	case STACK_SPILL:
		return RES_SPILL;
	case STACK_INVALID:
		return RES_REG;
	case STACK_ITER:
		return RES_ITER;
	case STACK_DYNPTR:
		return RES_DYNPTR;
	default:
		return __RES_MAX;
	}
}

/* Called by the runtime for every frame-descriptor entry it cleans up: `ptr` is the
 * slot address (stack entries) or the address of the saved register (register
 * entries, dereferenced here so the key is the pointer value). */
SEC("fentry/bpf_cleanup_resource")
int exception_cleanup_mark_free(u64 *ctx)
{
	struct bpf_frame_desc_reg_entry *entry = (void *)ctx[0];
	u64 ptr = ctx[1];
	struct bpf_resource *res;
	int spill_type = entry->spill_type;

	if (spill_type == STACK_INVALID)
		bpf_probe_read_kernel(&ptr, sizeof(ptr), (void *)ptr);
	if (only_count) {
		res_count--;
		return 0;
	}
	res = bpf_map_lookup_elem(&hashmap, &ptr);
	if (res && res->type == kind_of_spill(spill_type))
		bpf_map_delete_elem(&hashmap, &ptr);
	return 0;
}

static long count_elem(void *map, int *key, struct bpf_resource *val, int *count)
{
	(*count)++;
	return 0;
}

SEC("tc")
int exceptions_cleanup_check(struct __sk_buff *ctx)
{
	int count = 0;

	if (only_count)
		return res_count;
	bpf_for_each_map_elem(&hashmap, count_elem, &count, 0);
	return count;
}

/* 1: one open-coded iterator on the stack. */
SEC("tc")
int exceptions_cleanup_prog_num_iter(struct __sk_buff *ctx)
{
	int i;

	bpf_for(i, 0, 10) {
		mark_resource(bpf_for_iter_addr(), RES_ITER);
		bpf_throw(VAL);
	}
	return 0;
}

/* 2: three nested iterators in one frame. */
SEC("tc")
int exceptions_cleanup_prog_num_iter_mult(struct __sk_buff *ctx)
{
	int i, j, k;

	bpf_for(i, 0, 10) {
		mark_resource(bpf_for_iter_addr(), RES_ITER);
		bpf_for(j, 0, 10) {
			mark_resource(bpf_for_iter_addr(), RES_ITER);
			bpf_for(k, 0, 10) {
				mark_resource(bpf_for_iter_addr(), RES_ITER);
				bpf_throw(VAL);
			}
		}
	}
	return 0;
}

static __noinline int exceptions_cleanup_subprog(struct __sk_buff *ctx)
{
	int i;

	bpf_for(i, 0, 10) {
		mark_resource(bpf_for_iter_addr(), RES_ITER);
		bpf_throw(VAL);
	}
	return ctx->len;
}

/* 3: a ringbuf dynptr in main, an iterator in the static subprog that throws. */
SEC("tc")
int exceptions_cleanup_prog_dynptr_iter(struct __sk_buff *ctx)
{
	struct bpf_dynptr rbuf;
	int ret = 0;

	bpf_ringbuf_reserve_dynptr(&ringbuf, 8, 0, &rbuf);
	mark_resource(&rbuf, RES_DYNPTR);
	if (ctx->protocol)
		ret = exceptions_cleanup_subprog(ctx);
	bpf_ringbuf_discard_dynptr(&rbuf, 0);
	return ret;
}

/* 4: a bpf_obj_new object spilled to the stack (its address is taken). */
SEC("tc")
int exceptions_cleanup_obj(struct __sk_buff *ctx)
{
	struct foo *p;

	p = bpf_obj_new(struct foo);
	mark_resource(&p, RES_SPILL);
	bpf_throw(VAL);
	return p->i;
}

/* 5: the same with a per-CPU object. */
SEC("tc")
int exceptions_cleanup_percpu_obj(struct __sk_buff *ctx)
{
	struct foo *p;

	p = bpf_percpu_obj_new(struct foo);
	mark_resource(&p, RES_SPILL);
	bpf_throw(VAL);
	return !p;
}

/* 6: a ringbuf record spilled to the stack. */
SEC("tc")
int exceptions_cleanup_ringbuf(struct __sk_buff *ctx)
{
	void *p;

	p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	mark_resource(&p, RES_SPILL);
	bpf_throw(VAL);
	if (p)
		bpf_ringbuf_discard(p, 0);
	return 0;
}

/* 7: a ringbuf record in a callee-saved register (marked by value). */
SEC("tc")
int exceptions_cleanup_reg(struct __sk_buff *ctx)
{
	void *p;

	p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	mark_resource(p, RES_REG);
	bpf_throw(VAL);
	if (p)
		bpf_ringbuf_discard(p, 0);
	return 0;
}

/* 8, 9: one stack slot that holds NULL on one path and a record on the other. */
SEC("tc")
int exceptions_cleanup_null_or_ptr_do_ptr(struct __sk_buff *ctx)
{
	volatile union {
		u64 raw;
		void *ptr;
	} slot;
	u64 zero = 0;

	__builtin_memcpy((void *)&slot, &zero, sizeof(zero));
	mark_resource((void *)&slot, RES_SPILL);
	if (ctx->len)
		slot.ptr = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	bpf_throw(VAL);
	return !slot.ptr;
}

SEC("tc")
int exceptions_cleanup_null_or_ptr_do_null(struct __sk_buff *ctx)
{
	volatile union {
		u64 raw;
		void *ptr;
	} slot;
	u64 zero = 0;

	__builtin_memcpy((void *)&slot, &zero, sizeof(zero));
	mark_resource((void *)&slot, RES_SPILL);
	if (!ctx->len)
		slot.ptr = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	bpf_throw(VAL);
	return !slot.ptr;
}

/* 10: four records in R6-R9, marked by a static subprog, thrown from main. */
static __noinline int mark_resource_subprog(u64 a, u64 b, u64 c, u64 d)
{
	mark_resource((void *)a, RES_REG);
	mark_resource((void *)b, RES_REG);
	mark_resource((void *)c, RES_REG);
	mark_resource((void *)d, RES_REG);
	return 0;
}

#define RESERVE_INTO(reg)                                                       \
	"r1 = %[ringbuf] ll;"                                                   \
	"r2 = 8;"                                                               \
	"r3 = 0;"                                                               \
	"call %[bpf_ringbuf_reserve];"                                          \
	reg " = r0;"

SEC("tc")
int exceptions_cleanup_callee_saved(struct __sk_buff *ctx)
{
	asm volatile(
		RESERVE_INTO("r6")
		RESERVE_INTO("r7")
		RESERVE_INTO("r8")
		RESERVE_INTO("r9")
		"r1 = r6;"
		"r2 = r7;"
		"r3 = r8;"
		"r4 = r9;"
		"call mark_resource_subprog;"
		"r1 = 0xeB9F;"
		"call bpf_throw;"
		:: __imm_addr(ringbuf), __imm(bpf_ringbuf_reserve)
		: __clobber_all);
	mark_resource_subprog(0, 0, 0, 0);
	return 0;
}

/* Loaded, not run: the same subprog called with plain constants. */
SEC("tc")
int exceptions_cleanup_callee_saved_noopt(struct __sk_buff *ctx)
{
	mark_resource_subprog(1, 2, 3, 4);
	return 0;
}

/* 11: four frames, one resource each, counted (expect 4 cleanup calls). */
__noinline int global_subprog_throw(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);

	bpf_throw(VAL);
	return p ? *(int *)p : 0;
}

__noinline int global_subprog(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	int ret;

	if (!p)
		return 0;
	ret = global_subprog_throw(ctx);
	bpf_ringbuf_discard(p, 0);
	return ret;
}

static __noinline int static_subprog(struct __sk_buff *ctx)
{
	struct bpf_dynptr rbuf;
	u64 *data;
	int ret = 0;

	bpf_ringbuf_reserve_dynptr(&ringbuf, 8, 0, &rbuf);
	data = bpf_dynptr_data(&rbuf, 0, 8);
	if (data)
		ret = global_subprog(ctx) + *data;
	bpf_ringbuf_discard_dynptr(&rbuf, 0);
	return ret;
}

SEC("tc")
int exceptions_cleanup_frame(struct __sk_buff *ctx)
{
	struct foo *p;
	int ret;

	only_count = 1;
	res_count = 4;
	p = bpf_obj_new(struct foo);
	if (!p)
		return 1;
	ret = static_subprog(ctx);
	bpf_obj_drop(p);
	return ret;
}

/* 12: fifty objects in a stack array, counted; throws at the last one. */
SEC("tc")
int exceptions_cleanup_loop_iterations(struct __sk_buff *ctx)
{
	struct foo *f[50] = {};
	int i;

	only_count = 1;
	for (i = 0; i < 50; i++) {
		f[i] = bpf_obj_new(struct foo);
		if (!f[i])
			goto cleanup;
		res_count++;
		if (i == 49)
			bpf_throw(VAL);
	}
cleanup:
	for (i = 0; i < 50; i++) {
		if (f[i])
			bpf_obj_drop(f[i]);
	}
	return 0;
}

/* Seven no-op moves: zero bytes in the x86 JIT, removed pcs for the bookkeeping. */
#define NOP_MOVES() asm volatile("r0 = r0; r0 = r0; r0 = r0; r0 = r0; r0 = r0; r0 = r0; r0 = r0;" ::: "r0")

/* 13: a record, no-op moves, a throw and dead code the verifier removes. */
SEC("tc")
int exceptions_cleanup_dead_code_elim(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);

	if (!p)
		return 0;
	NOP_MOVES();
	bpf_throw(VAL);
	bpf_ringbuf_discard(p, 0);
	return 1;
}

/* 14: case 11 with no-op moves before the calls and dead code after the throw. */
__noinline int global_subprog_throw_dce(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);

	bpf_throw(VAL);
	if (p)
		bpf_ringbuf_discard(p, 0);
	return ctx->len;
}

__noinline int global_subprog_dce(struct __sk_buff *ctx)
{
	void *p = bpf_ringbuf_reserve(&ringbuf, 8, 0);
	int ret;

	if (!p)
		return 0;
	NOP_MOVES();
	ret = global_subprog_throw_dce(ctx);
	bpf_ringbuf_discard(p, 0);
	return ret;
}

static __noinline int static_subprog_dce(struct __sk_buff *ctx)
{
	struct bpf_dynptr rbuf;
	u64 *data;
	int ret = 0;

	bpf_ringbuf_reserve_dynptr(&ringbuf, 8, 0, &rbuf);
	data = bpf_dynptr_data(&rbuf, 0, 8);
	if (data) {
		NOP_MOVES();
		ret = global_subprog_dce(ctx) + *data;
	}
	bpf_ringbuf_discard_dynptr(&rbuf, 0);
	return ret;
}

SEC("tc")
int exceptions_cleanup_frame_dce(struct __sk_buff *ctx)
{
	struct foo *p;
	int ret;

	only_count = 1;
	res_count = 4;
	p = bpf_obj_new(struct foo);
	if (!p)
		return 1;
	ret = static_subprog_dce(ctx);
	bpf_obj_drop(p);
	return ret;
}

/* Loaded, not run: NULL on one path and a record on the other at fp-8, with R7 a
 * non-zero scalar on one path and zero on the other. */
SEC("tc")
__naked int reject_slot_with_zero_vs_ptr_ok(void)
{
	asm volatile(
		"r7 = *(u32 *)(r1 + 0);"
		"r0 = 0;"
		"*(u64 *)(r10 - 8) = r0;"
		"if r7 != 0 goto 1f;"
		"r1 = %[ringbuf] ll;"
		"r2 = 8;"
		"r3 = 0;"
		"call %[bpf_ringbuf_reserve];"
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
