"""x86-64 encoders for the ALU idioms beyond `jit.x86.encode`: division and modulo, sign-extending
register moves, and byte swaps / endianness conversions.

Same conventions as `jit.x86.encode`: registers by BPF index (AUX_REG = r11), and every byte is the
one the kernel's x86 JIT emits (shared/reference/kernel-x86-jit-and-exceptions.md §1.7).

Division never faults in a jitted image: the verifier's fixups (verifier.rewrite.fixups.div_mod_patch)
have already guarded every divisor register against 0 (and, for the signed forms, against -1),
and rewritten `sdiv/smod K` with K = -1. So these sequences contain no checks of their own.
"""

from __future__ import annotations

from jit.x86.encode import (
    AUX_REG,
    add_1mod,
    add_1reg,
    add_2mod,
    add_2reg,
    emit_mov_reg,
    emit_pop,
    emit_push,
    imm32,
    is_ereg,
    maybe_emit_1mod,
    reg2hex,
)
from verifier.isa.insn import BPF_ARSH, BPF_LSH, BPF_REG_0, BPF_REG_3, BPF_RSH

# ---------------------------------------------------------------- division and modulo


def emit_mov_aux_imm(imm: int) -> bytes:
    """`mov r11, simm32` (49 C7 C3 id): the K-form divisor, sign-extended to 64 bits."""
    return bytes([add_1mod(0x48, AUX_REG), 0xC7, add_1reg(0xC0, AUX_REG)]) + imm32(imm)


def emit_div_mod(is_mod: bool, is64: bool, signed: bool, dst: int, src: int | None, imm: int = 0) -> bytes:
    """`dst /= divisor` or `dst %= divisor` through rdx:rax.

    `src` None means the K form (divisor = imm, loaded into r11). The sequence: save rax
    and rdx unless dst is that register; a divisor in rax or rdx (R0/R3) is copied to r11
    first, since both are about to be overwritten; `mov rax, dst`; `xor edx, edx; div` or
    `cdq/cqo; idiv`; copy the quotient (rax) or remainder (rdx) to dst; restore in reverse.
    32-bit forms zero-extend: every final write to dst is a 32-bit operation.
    """
    out = bytearray()
    if dst != BPF_REG_0:
        out += emit_push(BPF_REG_0)
    if dst != BPF_REG_3:
        out += emit_push(BPF_REG_3)
    if src is None:
        out += emit_mov_aux_imm(imm)
        divisor = AUX_REG
    elif src in (BPF_REG_0, BPF_REG_3):
        out += emit_mov_reg(True, AUX_REG, src)
        divisor = AUX_REG
    else:
        divisor = src
    if dst != BPF_REG_0:
        out += emit_mov_reg(is64, BPF_REG_0, dst)
    if signed:
        out += b"\x48\x99" if is64 else b"\x99"  # cqo / cdq: sign-extend rax into rdx
        out += maybe_emit_1mod(divisor, is64) + bytes([0xF7, add_1reg(0xF8, divisor)])  # idiv
    else:
        out += b"\x31\xd2"  # xor edx, edx (one byte shorter than xor rdx, rdx)
        out += maybe_emit_1mod(divisor, is64) + bytes([0xF7, add_1reg(0xF0, divisor)])  # div
    if is_mod and dst != BPF_REG_3:
        out += emit_mov_reg(is64, dst, BPF_REG_3)
    elif not is_mod and dst != BPF_REG_0:
        out += emit_mov_reg(is64, dst, BPF_REG_0)
    if dst != BPF_REG_3:
        out += emit_pop(BPF_REG_3)
    if dst != BPF_REG_0:
        out += emit_pop(BPF_REG_0)
    return bytes(out)


# ---------------------------------------------------------------- sign-extending moves


def emit_movsx_reg(bits: int, is64: bool, dst: int, src: int) -> bytes:
    """`dst = (s8/s16/s32) src`: movsx (0F BE / 0F BF) or movsxd (63), register direct.

    64-bit forms always carry REX.W. The 32-bit s8 form always carries a REX (at least
    0x40), which makes dil/sil/bpl addressable and is redundant otherwise; the 32-bit s16
    form carries one only for extended registers. There is no 32-bit s32 form.
    """
    modrm = add_2reg(0xC0, src, dst)
    if is64:
        rex = add_2mod(0x48, src, dst)
        if bits == 8:
            return bytes([rex, 0x0F, 0xBE, modrm])
        if bits == 16:
            return bytes([rex, 0x0F, 0xBF, modrm])
        return bytes([rex, 0x63, modrm])
    if bits == 8:
        return bytes([add_2mod(0x40, src, dst), 0x0F, 0xBE, modrm])
    rex = bytes([add_2mod(0x40, src, dst)]) if is_ereg(dst) or is_ereg(src) else b""
    return rex + bytes([0x0F, 0xBF, modrm])


# ---------------------------------------------------------------- byte order


def emit_movzx16(dst: int) -> bytes:
    """`movzx dst32, dst16` ([45] 0F B7 ModRM(d, d)): keep the low 16 bits, zero the rest."""
    rex = b"\x45" if is_ereg(dst) else b""
    return rex + bytes([0x0F, 0xB7, add_2reg(0xC0, dst, dst)])


def emit_bswap(width: int, dst: int) -> bytes:
    """Reverse the low `width` bytes of dst and zero-extend (END TO_BE, ALU64 BSWAP).

    16: `ror dst16, 8` (66 [41] C1 /1 08) then movzx; 32: `bswap dst32` ([41] 0F C8+r);
    64: `bswap dst64` (48|B 0F C8+r).
    """
    if width == 16:
        ror = b"\x66" + (b"\x41" if is_ereg(dst) else b"") + bytes([0xC1, add_1reg(0xC8, dst), 8])
        return ror + emit_movzx16(dst)
    if width == 32:
        return (b"\x41" if is_ereg(dst) else b"") + bytes([0x0F, add_1reg(0xC8, dst)])
    return bytes([add_1mod(0x48, dst), 0x0F, add_1reg(0xC8, dst)])


def emit_to_le(width: int, dst: int) -> bytes:
    """END TO_LE on a little-endian CPU only truncates: movzx for 16, `mov dst32, dst32`
    (the explicit zero-extension) for 32, and nothing at all for 64."""
    if width == 16:
        return emit_movzx16(dst)
    if width == 32:
        return emit_mov_reg(False, dst, dst)
    return b""


# pp field of the VEX prefix per shift: 66 (shlx), F2 (shrx), F3 (sarx).
_SHIFTX_PP = {BPF_LSH: 1, BPF_RSH: 3, BPF_ARSH: 2}


def emit_shiftx(op: int, is64: bool, dst: int, src: int) -> bytes:
    """BMI2 `shlx/shrx/sarx dst, dst, src` (what a kernel on a BMI2 CPU emits for a shift by
    a register other than R4): VEX3 `C4`, R/B from dst, map 0F38, W = is64, vvvv = the count
    register, then `F7` and ModRM reg = rm = dst."""
    ext = 1 if is_ereg(dst) else 0
    byte1 = ((ext ^ 1) << 7) | (1 << 6) | ((ext ^ 1) << 5) | 0x02
    vvvv = reg2hex(src) | (8 if is_ereg(src) else 0)
    byte2 = (int(is64) << 7) | ((~vvvv & 0xF) << 3) | _SHIFTX_PP[op]
    return bytes([0xC4, byte1, byte2, 0xF7, add_2reg(0xC0, dst, dst)])
