/* bpf-unwind test programs: kfunc declarations and the exception / object / iterator
 * macros the series' selftests use, written for this project.
 *
 * A kfunc is an extern function in the `.ksyms` pseudo section; clang emits its call as
 * `call -1` with an R_BPF_64_32 relocation against the name, and the loader resolves the
 * name against the verifier's kfunc table. */
#ifndef BPF_UNWIND_EXPERIMENTAL_H
#define BPF_UNWIND_EXPERIMENTAL_H

#include "bpf_base.h"

/* Program-local objects (bpf_obj_new) and their per-CPU variant. */
extern void *bpf_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_obj_drop_impl(void *kptr, void *meta) __ksym;
extern void *bpf_percpu_obj_new_impl(__u64 local_type_id, void *meta) __ksym;
extern void bpf_percpu_obj_drop_impl(void *kptr, void *meta) __ksym;
extern int bpf_rbtree_add_impl(struct bpf_rb_root *root, struct bpf_rb_node *node,
			       bool (*less)(struct bpf_rb_node *a, const struct bpf_rb_node *b),
			       void *meta, __u64 off) __ksym;

/* Open-coded numeric iterator. */
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

/* RCU read-side sections. */
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

/* Exceptions: not declared noreturn on purpose, so the code after a throw is emitted. */
extern void bpf_throw(__u64 cookie) __ksym;

/* The local BTF id of a type: clang emits an ld_imm64 of the id plus a CO-RE
 * relocation of kind TYPE_ID_LOCAL. */
#define bpf_core_type_id_local(type) __builtin_btf_type_id(*(typeof(type) *)0, 0)

#define bpf_obj_new(type) ((type *)bpf_obj_new_impl(bpf_core_type_id_local(type), NULL))
#define bpf_obj_drop(kptr) bpf_obj_drop_impl(kptr, NULL)
#define bpf_percpu_obj_new(type) ((type *)bpf_percpu_obj_new_impl(bpf_core_type_id_local(type), NULL))
#define bpf_percpu_obj_drop(kptr) bpf_percpu_obj_drop_impl(kptr, NULL)
#define bpf_rbtree_add(root, node, less) bpf_rbtree_add_impl(root, node, less, NULL, 0)

/* The rbtree root's node type, as a BTF decl tag on the root variable. */
#define __contains(type, member) __tag("contains:" #type ":" #member)

/* Name the exception callback of a program: a decl tag on the main function. */
#define __exception_cb(name) __tag("exception_callback:" #name)

/* for (i = start; i < end; i++) over an open-coded iterator that lives on the stack
 * and is destroyed when the loop's scope ends (the cleanup attribute). */
#define bpf_for(i, start, end)                                                          \
	for (struct bpf_iter_num __iter __attribute__((aligned(8), cleanup(bpf_iter_num_destroy))), \
	     *__iter_init __attribute__((unused)) =                                     \
		     (bpf_iter_num_new(&__iter, (start), (end)), (void *)0);             \
	     ({                                                                         \
		     int *__cur = bpf_iter_num_next(&__iter);                           \
		     __cur != NULL && ((i) = *__cur, (i) >= (start) && (i) < (end));    \
	     });)

/* Assertions: throw (cookie 0, or VAL for the _with forms) when COND does not hold. */
#define bpf_assert(cond) do { if (!(cond)) bpf_throw(0); } while (0)
#define bpf_assert_with(cond, val) do { if (!(cond)) bpf_throw(val); } while (0)

#define __is_signed_type(x) (((typeof(x))-1) < (typeof(x))0)

/* One comparison in assembly, so the verifier sees exactly `if L OP R goto`. OP is a
 * token (<, <=, ==, ...); signed types use the s-prefixed BPF compare except for the
 * operators that have no signed form. Evaluates to true when the comparison holds. */
#define __bpf_cmp(L, OPSTR, R, TRUE_LBL)                                                \
	asm volatile goto("if %[lhs] " OPSTR " %[rhs] goto %l[" #TRUE_LBL "]"           \
			  :: [lhs] "r"((__s64)(L)), [rhs] "ri"(R) :: TRUE_LBL)
#define __bpf_cmp_op(L, OP, R)                                                          \
	({                                                                              \
		bool __holds = true;                                                    \
		if (__is_signed_type(L) && __builtin_strcmp(#OP, "==") &&               \
		    __builtin_strcmp(#OP, "!=") && __builtin_strcmp(#OP, "&"))          \
			__bpf_cmp(L, "s" #OP, R, __cmp_true);                           \
		else                                                                    \
			__bpf_cmp(L, #OP, R, __cmp_true);                               \
		__holds = false;                                                        \
	__cmp_true:                                                                     \
		__holds;                                                                \
	})
#define bpf_cmp_unlikely(L, OP, R) __bpf_cmp_op(L, OP, R)
#define bpf_cmp_likely(L, OP, R) __bpf_cmp_op(L, OP, R)

/* Range assertions: two compares, each skipping `r1 = VAL; call bpf_throw` when it holds. */
#define __bpf_assert_cmp(LHS, OPSTR, RHS, VAL)                                          \
	asm volatile("if %[lhs] " OPSTR " %[rhs] goto +2; r1 = %[val]; call bpf_throw"  \
		     :: [lhs] "r"(LHS), [rhs] "r"((__u64)(RHS)), [val] "i"(VAL)            \
		     : "r0", "r1", "r2", "r3", "r4", "r5")
#define bpf_assert_range_with(LHS, BEG, END, VAL)                                       \
	do {                                                                            \
		_Static_assert((BEG) <= (END), "BEG must be <= END");                   \
		barrier_var(LHS);                                                       \
		if (__is_signed_type(LHS)) {                                            \
			__bpf_assert_cmp(LHS, "s>=", BEG, VAL);                         \
			__bpf_assert_cmp(LHS, "s<=", END, VAL);                         \
		} else {                                                                \
			__bpf_assert_cmp(LHS, ">=", BEG, VAL);                          \
			__bpf_assert_cmp(LHS, "<=", END, VAL);                          \
		}                                                                       \
	} while (0)
#define bpf_assert_range(LHS, BEG, END) bpf_assert_range_with(LHS, BEG, END, 0)

#endif
