"""The torch-free .pth reader vs files written by real torch (fixtures/fid/make_fixture.py)."""

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxsynth.eval.torch_weights import UnsafeCheckpoint, load_state_dict

FIX = Path(__file__).parent / "fixtures" / "fid"


@pytest.mark.parametrize("name", ["small_zip.pth", "small_legacy.pth"])
def test_reads_torch_files_bit_identically(name):
    expected = np.load(FIX / "small_expected.npz")
    got = load_state_dict(FIX / name)
    assert sorted(got) == sorted(expected.files)
    for k in expected.files:
        assert got[k].dtype == expected[k].dtype, k
        assert got[k].shape == expected[k].shape, k
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    # Views of one storage keep their offsets and strides.
    np.testing.assert_array_equal(got["row_view"], got["base"][2])
    np.testing.assert_array_equal(got["transposed"], got["base"].T)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_refuses_code_in_zip_checkpoint(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
        zf.writestr("archive/byteorder", "little")
    with pytest.raises(UnsafeCheckpoint, match="system"):
        load_state_dict(path)


def test_refuses_code_in_legacy_checkpoint(tmp_path):
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump({"w": _Evil()}, buf, protocol=2)
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpoint):
        load_state_dict(path)


def test_rejects_non_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(path)
