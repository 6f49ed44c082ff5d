"""Can a CUDA build of MXNet run on this machine's GPU? Reads the build's ``libmxnet.so`` without loading it.

    python -m benchmarks.cuda_compat mxnet_cu117-1.9.1-...whl          # or .../site-packages/mxnet/libmxnet.so
    python -m benchmarks.cuda_compat WHEEL --save-summary cu117.json   # 1 KB to take where the wheel is not
    python -m benchmarks.cuda_compat --summary cu117.json [--compute-capability 9.0]

Prints the GPU code the library carries (SASS per compute capability, PTX or none), the shared libraries it needs
with where the loader finds each here, the card's compute capability (``nvidia-smi``) and a verdict; exits 1 when the
build cannot run here. A card runs SASS built for its own major version and a minor version up to its own; PTX is
compiled by the driver for any newer card; a build with neither for the card fails at its first kernel with "no kernel
image is available for execution on the device".

The ELF section table and the fatbin container are read with ``struct`` here: the fatbin format is in no library, and
the check must run in the bare environment ``benchmarks/gpu.sh`` makes before MXNet is imported.
"""
import argparse
import ctypes
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

FATBIN_MAGIC = 0xBA55ED50
KINDS = {1: "PTX", 2: "SASS"}
SHT_DYNAMIC = 6
DT_NEEDED = 1


@dataclass
class Summary:
    """What a CUDA library carries and needs."""
    library: str
    kernels: Dict[str, List[int]]   # "SASS" / "PTX" -> compute capabilities x10 (86 = 8.6), sorted
    needed: List[str]               # DT_NEEDED sonames
    bundled: List[str]              # those that ship beside it (in the wheel's folder, or its own folder)


def _string(data, offset: int) -> str:
    """The NUL-terminated string at ``offset``."""
    return bytes(data[offset:data.find(b"\0", offset)]).decode()


def _sections(data) -> List[Tuple[str, int, int, int, int]]:
    """(name, type, offset, size, link) of each section of a 64-bit little-endian ELF file, in index order."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQII", data, shoff + i * entsize) for i in range(count)]
    names = headers[strndx][4]
    return [(_string(data, names + h[0]), h[1], h[4], h[5], h[6]) for h in headers]


def fatbin_kernels(section: bytes) -> Dict[str, List[int]]:
    """The compute capabilities (x10) of the SASS and PTX entries in a ``.nv_fatbin`` section."""
    found: Dict[str, set] = {"SASS": set(), "PTX": set()}
    pos = 0
    while pos + 16 <= len(section):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", section, pos)
        if magic != FATBIN_MAGIC:           # containers are 8-byte aligned and padded between
            pos += 8
            continue
        entry, end = pos + header_size, pos + header_size + size
        while entry < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", section, entry)
            arch, = struct.unpack_from("<I", section, entry + 28)
            if kind in KINDS:
                found[KINDS[kind]].add(arch)
            entry += entry_header + payload
        pos = end
    return {kind: sorted(archs) for kind, archs in found.items()}


def _read_library(path: str) -> Tuple[Dict[str, List[int]], List[str]]:
    """(GPU code by kind, DT_NEEDED sonames) of an ELF shared library, read without loading it."""
    kernels: Dict[str, List[int]] = {"SASS": [], "PTX": []}
    needed = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        sections = _sections(data)
        for name, kind, offset, size, link in sections:
            if name == ".nv_fatbin":
                kernels = fatbin_kernels(data[offset:offset + size])
            if kind == SHT_DYNAMIC:
                strings = sections[link][2]
                for entry in range(offset, offset + size, 16):
                    tag, value = struct.unpack_from("<qQ", data, entry)
                    if tag == DT_NEEDED:
                        needed.append(_string(data, strings + value))
    return kernels, needed


def summarise(path: str) -> Summary:
    """Read a shared library (or the ``libmxnet.so`` inside a wheel) without loading it."""
    if not zipfile.is_zipfile(path):
        kernels, needed = _read_library(path)
        folder = os.path.dirname(os.path.abspath(path))
        return Summary(path, kernels, needed, [n for n in needed if os.path.exists(os.path.join(folder, n))])
    with zipfile.ZipFile(path) as wheel, tempfile.TemporaryDirectory() as tmp:
        member = next(n for n in wheel.namelist() if n.endswith("/libmxnet.so"))
        extracted = os.path.join(tmp, "libmxnet.so")
        with wheel.open(member) as src, open(extracted, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        kernels, needed = _read_library(extracted)
        folder = os.path.dirname(member)
        bundled = [n for n in needed if f"{folder}/{n}" in wheel.namelist()]
    return Summary(f"{os.path.basename(path)}:{member}", kernels, needed, bundled)


def runs_on(kernels: Dict[str, List[int]], capability: Tuple[int, int]) -> Optional[str]:
    """How the card runs the kernels: 'SASS sm_XY', 'PTX compute_XY (JIT)' or None."""
    major, minor = capability
    sass = [a for a in kernels.get("SASS", []) if a // 10 == major and a % 10 <= minor]
    if sass:
        return f"SASS sm_{max(sass)}"
    ptx = [a for a in kernels.get("PTX", []) if a <= major * 10 + minor]
    return f"PTX compute_{max(ptx)} (compiled by the driver)" if ptx else None


def find_library(name: str) -> Optional[str]:
    """Whether the loader finds ``name`` here (dlopen's search: LD_LIBRARY_PATH, ldconfig's cache, /lib...)."""
    try:
        ctypes.CDLL(name)
    except OSError:
        return None
    return "found by the loader"


def card_capability() -> Optional[Tuple[int, int, str]]:
    """(major, minor, 'name, driver') of GPU 0 from nvidia-smi, None without one."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap,name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    cap, name, driver = [x.strip() for x in out.stdout.splitlines()[0].split(",")]
    major, minor = cap.split(".")
    return int(major), int(minor), f"{name}, driver {driver}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("library", nargs="?", help="libmxnet.so or an MXNet wheel")
    parser.add_argument("--summary", help="a summary written by --save-summary, instead of the library")
    parser.add_argument("--save-summary", help="write what the library carries and needs to this JSON file")
    parser.add_argument("--compute-capability", help="the card's, e.g. 9.0 (default: GPU 0's, from nvidia-smi)")
    args = parser.parse_args()
    if bool(args.library) == bool(args.summary):
        parser.error("give a library or --summary")
    if args.summary:
        with open(args.summary) as f:
            summary = Summary(**json.load(f))
    else:
        summary = summarise(args.library)
    if args.save_summary:
        with open(args.save_summary, "w") as f:
            json.dump(asdict(summary), f, indent=1)
    print(f"library: {summary.library}")
    for kind in ("SASS", "PTX"):
        archs = summary.kernels.get(kind, [])
        print(f"{kind}: " + (", ".join(f"{a // 10}.{a % 10}" for a in archs) or "none"))
    missing = []
    for name in summary.needed:
        where = "ships with it" if name in summary.bundled else find_library(name)
        print(f"needs {name}: {where or 'NOT FOUND'}")
        missing += [] if where else [name]
    if args.compute_capability:
        major, minor = (int(x) for x in args.compute_capability.split("."))
        card = (major, minor, "given")
    else:
        card = card_capability()
    verdict = 0
    if card is None:
        print("card: none found (nvidia-smi)")
        verdict = 1
    else:
        how = runs_on(summary.kernels, card[:2])
        print(f"card: compute capability {card[0]}.{card[1]} ({card[2]}): "
              + (f"runs the kernels as {how}" if how else "NO kernel image for it (neither its SASS nor PTX)"))
        verdict = 0 if how else 1
    if missing:
        print(f"missing libraries: {' '.join(missing)}")
        verdict = 1
    print("verdict: " + ("this build can run here" if verdict == 0 else "this build cannot run here"))
    return verdict


if __name__ == "__main__":
    sys.exit(main())
