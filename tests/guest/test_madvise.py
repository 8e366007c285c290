"""madvise (issue 11, defect 8): after MADV_DONTNEED a private file page holds the file's
contents as the file is now, a private anonymous page is zero, a shared page is unchanged;
MADV_REMOVE punches a hole in shared memory and refuses private mappings
(tests/fixtures/madvise.c, compared with its native run). Before the fix an unlinked file's
private pages came back as zeros, MADV_REMOVE zeroed private pages and left shared ones."""

import pytest

from tests.conftest import all_builds, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("madvise"))
def test_madvise_behaves_as_on_linux(arch: str, flavour: str, tmp_path) -> None:
    result = run_like_native(arch, "madvise", flavour, status=0, workdir=tmp_path)
    assert result.stderr == b""
