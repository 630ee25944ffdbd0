"""Outputs checked before work and written atomically: nothing partial at an output path, ever."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import SimpleITK as sitk

from CTMRRegistrationLib.core.errors import InputError, OutputError
from CTMRRegistrationLib.core.output_files import (
    check_output_file,
    check_output_folder,
    write_atomically,
    write_folder_atomically,
    write_text_atomically,
)
from CTMRRegistrationLib.core.output_plan import check_output_plan

LIBRARY = str(Path(__file__).resolve().parents[2])


def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_mount_namespace = pytest.mark.skipif(not unshare_works(), reason="no user and mount namespaces (unshare -rm)")


def run_on_full_device(folder: Path, command: list[str], size: str = "256k", leave_kib: int = 0, **kwargs):
    """Run `command` with a fresh tmpfs of `size` mounted on `folder`, filled up to `leave_kib` KiB free."""
    fill = (f"dd if=/dev/zero of={folder}/filler bs=1k count=$(( $(df -k --output=avail {folder} | tail -1)"
            f" - {leave_kib} )) 2>/dev/null")
    script = f'mount -t tmpfs -o size={size} none "{folder}" && {fill}; exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          **kwargs)


def test_output_file_checks(tmp_path):
    (tmp_path / "folder.h5").mkdir()
    given = tmp_path / "ct.nrrd"
    given.write_bytes(b"x")
    link = tmp_path / "full.tfm"
    link.symlink_to("/dev/full")
    with pytest.raises(InputError, match="unsupported file type"):
        check_output_file(tmp_path / "t.png", "--output-transform", (".h5", ".tfm"))
    with pytest.raises(InputError, match="is a folder"):
        check_output_file(tmp_path / "folder.h5", "--output-transform", (".h5",))
    with pytest.raises(InputError, match="not a regular file"):
        check_output_file(link, "--output-transform", (".tfm",))
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_file(given / "t.h5", "--output-transform", (".h5",))
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(given, "--report-folder")
    assert check_output_file(tmp_path / "new" / "t.h5", "--output-transform", (".h5",)) == tmp_path / "new" / "t.h5"


def test_failed_write_leaves_nothing_and_keeps_an_older_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("older")

    def write_half(path: Path) -> None:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="cannot write .*t.txt: No space left on device"):
        write_atomically(target, write_half)
    with pytest.raises(OutputError, match="nothing was written"):
        write_atomically(tmp_path / "empty.txt", lambda path: path.write_bytes(b""))
    with pytest.raises(OutputError, match="unreadable"):
        write_atomically(tmp_path / "bad.tfm", lambda path: path.write_text("junk"),
                         lambda path: (_ for _ in ()).throw(InputError("unreadable")))
    assert target.read_text() == "older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_interrupted_write_leaves_nothing(tmp_path):
    def interrupted(path: Path) -> None:
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "t.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_text_and_folder(tmp_path):
    assert write_text_atomically(tmp_path / "a.json", "{}\n").read_text() == "{}\n"

    def pictures(folder: Path) -> None:
        (folder / "report.html").write_text("<html></html>")
        sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), str(folder / "p.png"))

    write_folder_atomically(tmp_path / "report", pictures)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["p.png", "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "report"]


@needs_mount_namespace
def test_transform_on_a_full_device_is_an_error_and_leaves_nothing(tmp_path):
    """The probe's worst case: a .tfm written as 0 bytes on a full disk and reported as written."""
    folder = tmp_path / "full"
    folder.mkdir()
    script = textwrap.dedent(f"""
        import os
        import SimpleITK as sitk
        from CTMRRegistrationLib.core.errors import OutputError
        from CTMRRegistrationLib.mrml import node_io
        from CTMRRegistrationLib.mrml.scene import create_headless_context
        from CTMRRegistrationLib.mrml.transform_nodes import new_transform_node
        context = create_headless_context()
        node = new_transform_node(context, sitk.Euler3DTransform((0, 0, 0), 0.1, 0.2, 0.3, (1, 2, 3)), "t")
        for name in ("t.tfm", "t.h5", "t.txt"):
            try:
                node_io.save_node(context, node, "{folder}/" + name)
                print("written", name)
            except OutputError as error:
                print("error", name, error)
        print("left", *sorted(os.listdir("{folder}")))
    """)
    done = run_on_full_device(folder, [sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": LIBRARY})
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line.split()[:2] for line in lines[:3]] == [["error", "t.tfm"], ["error", "t.h5"], ["error", "t.txt"]]
    assert all("cannot write" in line and line.endswith("no space left on the device") for line in lines[:3])
    assert "HDF5-DIAG" not in done.stderr  # one line per failure, not the libraries' diagnostics
    assert lines[3] == "left filler"  # no partial file, no staging folder


def test_the_output_plan_refuses_inputs_by_path_link_and_identity(tmp_path):
    given = tmp_path / "ct.nrrd"
    given.write_bytes(b"x")
    (tmp_path / "soft.nrrd").symlink_to(given)
    os.link(given, tmp_path / "hard.nrrd")
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    inputs = [("--fixed", given), ("--moving", dicom)]
    for clash in (tmp_path / "." / "ct.nrrd", tmp_path / "soft.nrrd", tmp_path / "hard.nrrd"):
        with pytest.raises(InputError, match="--output-volume would overwrite the input --fixed"):
            check_output_plan(inputs, [("--output-volume", clash)])
    with pytest.raises(InputError, match="inside the input folder --moving"):
        check_output_plan(inputs, [("--report-folder (report.html)", dicom / "report.html")])
    stage = ("--output-stage-transforms (rigid.h5)", tmp_path / "s" / "rigid.h5")
    with pytest.raises(InputError, match=r"--output-stage-transforms \(rigid.h5\) and --output-transform would both"):
        check_output_plan(inputs, [("--output-transform", tmp_path / "s" / "rigid.h5"), stage])
    check_output_plan(inputs, [("--output-transform", tmp_path / "t.h5"), ("--output-volume", tmp_path / "v.nrrd")])
