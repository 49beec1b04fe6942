/* bpf-unwind test programs: instrumentation shared by the exceptions_cleanup programs
 * (series §7.2): a ring buffer to reserve from, a hash map of marked resources and the
 * counters the fentry hook on bpf_cleanup_resource and the check program use. */
#ifndef BPF_UNWIND_CLEANUP_COMMON_H
#define BPF_UNWIND_CLEANUP_COMMON_H

#include "progs.h"

#define VAL 0xeB9F

struct bpf_resource {
	int type;
};

enum resource_kind {
	RES_DYNPTR = 0,
	RES_ITER = 1,
	RES_REG = 2,
	RES_SPILL = 3,
	__RES_MAX = 4,
};

/* The verifier's stack slot kinds as a frame-descriptor entry reports them. */
enum { STACK_INVALID = 0, STACK_SPILL = 1, STACK_DYNPTR = 4, STACK_ITER = 5 };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8);
} ringbuf SEC(".maps");

/* Inline-asm operands naming a helper (by id) or the address of a map. */
#define __imm(name) [name] "i"(name)
#define __imm_addr(name) [name] "i"(&name)
#define __clobber_all "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "memory"

/* The address of the innermost bpf_for loop's iterator (only inside its body). */
#define bpf_for_iter_addr() ((void *)&__iter)

#endif
