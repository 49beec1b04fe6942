// SPDX-License-Identifier: GPL-2.0
/* Global data: `.bss`, `.data`, `.data.NAME` and `.rodata` variables, which a loader turns
 * into one-element array maps and an ld_imm64 of a variable into a pointer to the map
 * value (PTR_TO_MAP_VALUE). Reads and writes at constant offsets, `.rodata` read as known
 * constants (the kernel freezes it), a variable passed to a subprog, global data seen by
 * an exception callback, and the accesses the kernel refuses: outside the value, and
 * writes into `.rodata`; and the ld_imm64 of a map itself. Return values are for the
 * default ctx (len 74). */
#include "progs.h"

#define __imm_addr(name) [name] "i"(&name)
#define __clobber_common "r0", "r1", "r2", "memory"

int counter;				/* .bss */
long long wide;				/* .bss, after counter */
int data_var = 7;			/* .data */
int named_var private_data(A) = 9;	/* .data.A */
const volatile int ro_var = 5;		/* .rodata */
const volatile bool ro_flag = false;	/* .rodata */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, int);
	__type(value, long long);
} array SEC(".maps");

/* Read-modify-write of a .bss variable: 3. */
SEC("tc")
int global_bss_counter(struct __sk_buff *ctx)
{
	counter += 3;
	return counter;
}

/* .data + .data.A + .rodata + ctx->len: 7 + 9 + 5 + 74 = 95. */
SEC("tc")
int global_data_sum(struct __sk_buff *ctx)
{
	return data_var + named_var + ro_var + ctx->len;
}

/* Writes then reads back two variables of .bss and one of .data: 74 + 148 + 1 = 223. */
SEC("tc")
int global_data_write_read(struct __sk_buff *ctx)
{
	data_var = ctx->len;
	wide = data_var * 2;
	counter = 1;
	return data_var + wide + counter;
}

/* A .rodata flag is a known constant: the dead branch goes, as in the kernel. Returns 2. */
SEC("tc")
int global_rodata_branch(struct __sk_buff *ctx)
{
	if (ro_flag)
		return 1;
	return 2;
}

static __noinline int bump(int *p, int by)
{
	*p += by;
	return *p;
}

/* A pointer into .bss passed to a static subprog, twice: 10 + 74 = 84. */
SEC("tc")
int global_ptr_to_subprog(struct __sk_buff *ctx)
{
	bump(&counter, 10);
	return bump(&counter, ctx->len);
}

__noinline int global_cb(__u64 cookie)
{
	return counter + cookie;
}

/* The exception callback reads what main wrote before throwing: 74 + 3 = 77. */
SEC("tc") __exception_cb(global_cb)
int global_throw_sees_data(struct __sk_buff *ctx)
{
	counter = ctx->len;
	if (ctx->len)
		bpf_throw(3);
	return 0;
}

/* Rejected: a u32 load just past .bss (value_size 16). */
SEC("tc") __naked
int global_oob_past_end(void)
{
	asm volatile("r1 = %[counter] ll; r0 = *(u32 *)(r1 + 16); exit;"
		     :: __imm_addr(counter) : __clobber_common);
}

/* Rejected: a u64 load straddling the end of .bss. */
SEC("tc") __naked
int global_oob_straddle(void)
{
	asm volatile("r1 = %[counter] ll; r0 = *(u64 *)(r1 + 12); exit;"
		     :: __imm_addr(counter) : __clobber_common);
}

/* Rejected: the pointer moved before the value's start. */
SEC("tc") __naked
int global_oob_negative(void)
{
	asm volatile("r1 = %[counter] ll; r1 += -4; r0 = *(u32 *)(r1 + 0); exit;"
		     :: __imm_addr(counter) : __clobber_common);
}

/* Rejected: a store into .rodata (BPF_F_RDONLY_PROG). */
SEC("tc") __naked
int global_rodata_write(void)
{
	asm volatile("r1 = %[ro_var] ll; r2 = 1; *(u32 *)(r1 + 0) = r2; r0 = 0; exit;"
		     :: __imm_addr(ro_var) : __clobber_common);
}

/* Accepted: a misaligned load inside the value (privileged, x86). Returns 0. */
SEC("tc") __naked
int global_misaligned_read(void)
{
	asm volatile("r1 = %[counter] ll; r0 = *(u32 *)(r1 + 1); exit;"
		     :: __imm_addr(counter) : __clobber_common);
}

/* Accepted: the ld_imm64 of a map (CONST_PTR_TO_MAP, `map_ptr`), kept but not used. */
SEC("tc") __naked
int global_map_ptr(void)
{
	asm volatile("r1 = %[array] ll; r0 = 0; exit;" :: __imm_addr(array) : __clobber_common);
}

LICENSE_GPL;
