"""Pointer authentication (ARMv8.3 PAuth) for an aarch64 guest, as Linux sets it up.

Measured on unicorn 2.1.4's "max" core (ID_AA64ISAR1_EL1 APA=1, GPA=1: QARMA): PACIA and
friends leave pointers unchanged while SCTLR_EL1.EnIA/EnIB/EnDA/EnDB are clear (the reset
value), and once set they trap as undefined instructions until the traps to EL2 and EL3 are
off: HCR_EL2.API/APK (which count only in the non-secure state: SCR_EL3.NS) and SCR_EL3.API/APK.
With all of that set, PACIA signs, AUTIA of a signed pointer gives it back and of a corrupted
one gives an invalid pointer (the core implements FEAT_PAuth without FPAC, as QEMU 5.0).

Linux gives every process fresh random keys at execve and a forked child its parent's
(arch/arm64/kernel/pointer_auth.c); a host fork copies the engine, so exec is the only place.
"""

from __future__ import annotations

from unicorn import Uc

from qemuser.cpu.aarch64 import address_auth, generic_auth, set_random_keys

__all__ = ["address_auth", "enable_pointer_auth", "generic_auth", "set_random_keys"]

# (op0, op1, CRn, CRm, op2)
_SCTLR_EL1 = (3, 0, 1, 0, 0)
_HCR_EL2 = (3, 4, 1, 1, 0)
_SCR_EL3 = (3, 6, 1, 1, 0)
_ID_AA64ISAR1_EL1 = (3, 0, 0, 6, 1)
_SCTLR_ENIA, _SCTLR_ENIB, _SCTLR_ENDA, _SCTLR_ENDB = 1 << 31, 1 << 30, 1 << 27, 1 << 13
_HCR_RW, _HCR_APK, _HCR_API = 1 << 31, 1 << 40, 1 << 41
_SCR_NS, _SCR_RW, _SCR_APK, _SCR_API = 1 << 0, 1 << 10, 1 << 16, 1 << 17


def enable_pointer_auth(uc: Uc) -> bool:
    """Turn PAuth on with fresh random keys when the core has it; whether it has."""
    isar1 = uc.cpr_read(*_ID_AA64ISAR1_EL1)  # type: ignore[attr-defined]
    if not (address_auth(isar1) or generic_auth(isar1)):
        return False
    uc.cpr_write(*_SCR_EL3, uc.cpr_read(*_SCR_EL3) | _SCR_NS | _SCR_RW | _SCR_APK | _SCR_API)  # type: ignore[attr-defined]
    uc.cpr_write(*_HCR_EL2, uc.cpr_read(*_HCR_EL2) | _HCR_RW | _HCR_APK | _HCR_API)  # type: ignore[attr-defined]
    set_random_keys(uc)
    sctlr = uc.cpr_read(*_SCTLR_EL1)  # type: ignore[attr-defined]
    uc.cpr_write(*_SCTLR_EL1, sctlr | _SCTLR_ENIA | _SCTLR_ENIB | _SCTLR_ENDA | _SCTLR_ENDB)  # type: ignore[attr-defined]
    return True
