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


def _u(text: str) -> bytes:
    b = text.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def test_legacy_storage_view(tmp_path):
    """Pre-1.0 torch could save a tensor on a storage *view* (view_metadata = (key, offset,
    size)). Written here opcode by opcode: {"w": tensor on view(offset 2, size 3) of a
    6-float storage, tensor offset 1, size (2,)} -> base[3:5]."""
    base = np.arange(6, dtype=np.float32) * 1.5
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    body = (
        b"\x80\x02}"
        + _u("w")
        + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"("
        + _u("storage")
        + b"ctorch\nFloatStorage\n"
        + _u("k0")
        + _u("cpu")
        + b"K\x06"
        + b"("
        + _u("k0v")
        + b"K\x02K\x03tt"
        + b"Q"
        + b"K\x01K\x02\x85K\x01\x85\x89}tRs."
    )
    buf.write(body)
    pickle.dump(["k0"], buf, protocol=2)
    buf.write(np.int64(6).tobytes() + base.tobytes())
    path = tmp_path / "legacy_view.pth"
    path.write_bytes(buf.getvalue())
    got = load_state_dict(path)
    np.testing.assert_array_equal(got["w"], base[3:5])
