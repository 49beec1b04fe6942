/* bpf-unwind test programs: the one header every corpus program includes. */
#ifndef BPF_UNWIND_PROGS_H
#define BPF_UNWIND_PROGS_H

#include "bpf_base.h"
#include "bpf_helper_defs.h"
#include "bpf_experimental.h"

#define LICENSE_GPL char _license[] SEC("license") = "GPL"

#endif
