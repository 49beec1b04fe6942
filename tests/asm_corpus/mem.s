.prog_type xdp

mem:
	r0 = *(u8 *)(r1 + 4)
	r2 = *(u8 *)(r10 - 512)
	r0 = *(u16 *)(r1 + 4)
	r2 = *(u16 *)(r10 - 512)
	r0 = *(u32 *)(r1 + 4)
	r2 = *(u32 *)(r10 - 512)
	r0 = *(u64 *)(r1 + 4)
	r2 = *(u64 *)(r10 - 512)
	r0 = *(s8 *)(r1 + 4)
	r2 = *(s8 *)(r10 - 512)
	r0 = *(s16 *)(r1 + 4)
	r2 = *(s16 *)(r10 - 512)
	r0 = *(s32 *)(r1 + 4)
	r2 = *(s32 *)(r10 - 512)
	r3 = *(u64 *)(r4 + 32767)
	r3 = *(u64 *)(r4 - 32768)
	*(u8 *)(r10 - 8) = r1
	*(u8 *)(r1 + 0) = -5
	*(u16 *)(r10 - 8) = r1
	*(u16 *)(r1 + 0) = -5
	*(u32 *)(r10 - 8) = r1
	*(u32 *)(r1 + 0) = -5
	*(u64 *)(r10 - 8) = r1
	*(u64 *)(r1 + 0) = -5
	*(u64 *)(r10 - 16) = 2147483647
	lock *(u64 *)(r10 - 8) += r1
	lock *(u32 *)(r2 + 4) += w3
	lock *(u64 *)(r10 - 8) &= r1
	lock *(u32 *)(r2 + 4) &= w3
	lock *(u64 *)(r10 - 8) |= r1
	lock *(u32 *)(r2 + 4) |= w3
	lock *(u64 *)(r10 - 8) ^= r1
	lock *(u32 *)(r2 + 4) ^= w3
	r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
	w4 = atomic_fetch_add((u32 *)(r2 + 4), w4)
	r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)
	w4 = atomic_fetch_and((u32 *)(r2 + 4), w4)
	r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)
	w4 = atomic_fetch_or((u32 *)(r2 + 4), w4)
	r1 = atomic_fetch_xor((u64 *)(r10 - 8), r1)
	w4 = atomic_fetch_xor((u32 *)(r2 + 4), w4)
	r1 = xchg_64(r10 - 8, r1)
	w5 = xchg32_32(r2 + 12, w5)
	r0 = cmpxchg_64(r10 - 8, r0, r1)
	w0 = cmpxchg32_32(r3 + 0, w0, w9)
	r0 = *(u8 *)skb[0]
	r0 = *(u16 *)skb[12]
	r0 = *(u32 *)skb[-4]
	r0 = *(u8 *)skb[r6]
	r0 = *(u16 *)skb[r7 + 2]
	r0 = *(u32 *)skb[r8 - 2]
	r1 = 0x0 ll
	r2 = 0x1234 ll
	r3 = 0xffffffffffffffff ll
	r4 = 0x123456789abcdef0 ll
	ld_pseudo r1, 1, 0x1
	ld_pseudo r2, 2, 0x2
	ld_pseudo r3, 3, 0x3
	ld_pseudo r5, 5, 0x5
	ld_pseudo r6, 6, 0x6
	ld_pseudo r2, 2, 0x1000000007
	r0 = 0
	exit
