"""Strip debug information from the shared libraries inside wheels (in place), fixing RECORD.

Some wheels ship their extension modules with DWARF debug info: CTranslate2's `_ext` module is
65 MB with it and 1.7 MB without, a tenth of the container image. `strip --strip-debug` removes
only the debug sections (symbols stay, so nothing that loads the library notices); files without
a `.debug_info` section are left byte for byte as they are (auditwheel-patched libraries can be
damaged by a full strip, so none is touched needlessly).

Usage: python scripts/strip_wheels.py WHEEL_DIR     (needs binutils: strip, readelf)
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def _has_debug_info(path: Path) -> bool:
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=False)
    return out.returncode == 0 and ".debug_info" in out.stdout


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def strip_wheel(wheel: Path) -> int:
    """Strip the wheel's libraries that carry debug info; returns the bytes saved."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".so") or ".so." in Path(n).name]
        if not names:
            return 0
        replaced: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                path = Path(tmp) / Path(name).name
                path.write_bytes(zf.read(name))
                if not _has_debug_info(path):
                    continue
                subprocess.run(["strip", "--strip-debug", str(path)], check=True)
                replaced[name] = path.read_bytes()
        if not replaced:
            return 0
        saved = sum(zf.getinfo(n).file_size - len(d) for n, d in replaced.items())
        out = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
            for info in zf.infolist():
                data = replaced.get(info.filename)
                if data is None:
                    data = zf.read(info.filename)
                    if info.filename.endswith(".dist-info/RECORD"):
                        data = _fix_record(data.decode(), replaced).encode()
                new.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    shutil.move(out, wheel)
    return saved


def _fix_record(record: str, replaced: dict[str, bytes]) -> str:
    lines = []
    for line in record.splitlines():
        name = line.split(",", 1)[0]
        if name in replaced:
            line = f"{name},{_record_hash(replaced[name])},{len(replaced[name])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for wheel in sorted(Path(argv[0]).glob("*.whl")):
        saved = strip_wheel(wheel)
        if saved:
            print(f"strip_wheels: {wheel.name}: {saved / 1e6:.0f} MB of debug info removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
