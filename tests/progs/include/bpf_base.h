/* bpf-unwind test programs: basic types, section/attribute macros and map definitions.
 * Written for this project (no libbpf headers needed). */
#ifndef BPF_UNWIND_BASE_H
#define BPF_UNWIND_BASE_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;
typedef u8 __u8;
typedef u16 __u16;
typedef u32 __u32;
typedef u64 __u64;
typedef s16 __s16;
typedef s32 __s32;
typedef s64 __s64;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* Placement and linkage. */
#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
#define __noinline __attribute__((noinline))
#define __always_inline inline __attribute__((always_inline))
#define __naked __attribute__((naked))
#define __hidden __attribute__((visibility("hidden")))
#define __tag(text) __attribute__((btf_decl_tag(text)))
/* A global in its own data section ("private" in the selftests). */
#define private_data(name) SEC(".data." #name) __hidden __attribute__((aligned(8)))

/* Keep the compiler from reasoning about a value (forces it into a register). */
#define barrier_var(v) asm volatile("" : "+r"(v))
#define barrier() asm volatile("" ::: "memory")
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* BTF-defined maps: each member's BTF type carries one property of the map. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
enum { CLOCK_MONOTONIC = 1 };

/* The tc program context: the leading fields of struct __sk_buff (UAPI layout). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
};

/* Opaque kernel objects a program may hold on its stack or in maps. */
struct bpf_dynptr {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

struct bpf_timer {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_spin_lock {
	__u32 val;
};

struct bpf_rb_root {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_rb_node {
	__u64 __opaque[4];
} __attribute__((aligned(8)));

/* What the fentry program of the cleanup tests sees (a frame-descriptor entry). */
struct bpf_frame_desc_reg_entry {
	__u32 type;
	__s16 spill_type;
	__s16 off;
	__u64 btf;
	__u32 btf_id;
};

#define bpf_htons(x) ((__u16)((((x) & 0xff) << 8) | (((x) >> 8) & 0xff)))
#define bpf_ntohs(x) bpf_htons(x)
#define ETH_P_IP 0x0800

#endif
