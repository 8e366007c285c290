"""The CPU specs' data agrees with the libraries it names."""

import capstone

from qemuser.cpu import CPUS


def test_capstone_numbers_match_capstone() -> None:
    assert CPUS["aarch64"].capstone == (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    assert CPUS["riscv64"].capstone == (
        capstone.CS_ARCH_RISCV,
        capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC,
    )


def test_each_spec_builds_an_engine_with_4k_pages() -> None:
    for spec in CPUS.values():
        for model in spec.models:
            assert spec.new_engine(model).ctl_get_page_size() == 4096
