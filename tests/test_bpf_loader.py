"""BPF programs built in a child process and used by fd: maps, uprobes, offsets, errors, memory."""

from __future__ import annotations

import os
import re
import ssl
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ebpf_env import ebpf_skip_reason

from lumen_agent.capture.bpf_loader import load_bpf
from lumen_agent.capture.elf_offsets import file_offset
from lumen_agent.capture.kernel_setup import CaptureError

needs_ebpf = pytest.mark.skipif(ebpf_skip_reason() is not None, reason=str(ebpf_skip_reason()))

LIBSSL = ssl._ssl.__file__  # noqa: SLF001 - the extension module, to find the libssl it links


def _libssl_path() -> str:
    out = subprocess.run(["ldd", LIBSSL], capture_output=True, text=True, check=True).stdout
    return next(line.split("=>")[1].split()[0] for line in out.splitlines() if "libssl.so" in line)


def _function_symbols(path: str, limit: int = 200) -> list[tuple[str, int]]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
        syms = [(s.name, s["st_value"]) for s in table.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]]
    return syms[:limit]


@needs_ebpf
@pytest.mark.parametrize("path", ["libssl", "/usr/bin/node"])
def test_file_offsets_are_the_ones_bcc_computes(path):
    from lumen_agent.capture.bpf_loader import import_bcc

    bcc = import_bcc()
    path = _libssl_path() if path == "libssl" else path
    symbols = _function_symbols(path)
    assert len(symbols) >= 100
    for _name, vaddr in symbols:
        _, theirs = bcc.BPF._check_path_symbol(path.encode(), b"", vaddr, -1)  # noqa: SLF001
        assert file_offset(path, vaddr) == theirs


def test_non_pie_executable_offsets_are_translated_and_outside_text_is_an_error():
    # /usr/bin/node is not PIE: its text segment is mapped at 0xb6f000 from file offset 0x76f000.
    from elftools.elf.elffile import ELFFile

    with open("/usr/bin/node", "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_EXEC"
        text = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1)
    vaddr = text["p_vaddr"] + 0x10
    assert file_offset("/usr/bin/node", vaddr) == text["p_offset"] + 0x10
    assert text["p_vaddr"] != text["p_offset"]
    with pytest.raises(ValueError, match="in no executable segment"):
        file_offset("/usr/bin/node", 0x10)



@pytest.mark.parametrize("path", ["/usr/bin/node", "/bin/ls", sys.executable, "libssl"])
def test_executable_segments_are_the_ones_pyelftools_reads(path):
    from elftools.elf.elffile import ELFFile

    from lumen_agent.capture.elf_offsets import _text_segments

    path = _libssl_path() if path == "libssl" else os.path.realpath(path)
    with open(path, "rb") as f:
        theirs = tuple((s["p_vaddr"], s["p_vaddr"] + s["p_memsz"], s["p_offset"])
                       for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1)
    st = os.stat(path)
    assert theirs and _text_segments(path, st.st_dev, st.st_ino, st.st_mtime_ns) == theirs


def test_a_file_that_is_no_whole_elf64_is_a_value_error(tmp_path):
    head = Path("/bin/ls").read_bytes()[:80]  # the ELF header, and program headers cut short
    for name, data, problem in (("text", b"#!/bin/sh\n", "not ELF"), ("empty", b"", "not ELF"),
                                ("cut", head, "truncated ELF"), ("header", head[:40], "truncated ELF"),
                                ("elf32", head[:4] + b"\x01" + head[5:], "not ELF64"),
                                ("order", head[:5] + b"\x03" + head[6:], "unknown byte order")):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: {problem}$"):
            file_offset(str(bad), 0x1000)

CHILD = textwrap.dedent(
    """
    import struct, sys
    from lumen_agent.capture.bpf_loader import load_bpf
    from lumen_agent.capture.ebpf import bpf_source_dir
    src = bpf_source_dir() / "connect_owner.c"
    bpf = load_bpf(src.name, src.read_bytes(), ["-DLUMEN_CONNECT_OWNERS=128"])
    ports = bpf.maps["sniffed_ports"]
    ports.update(struct.pack("=H", 11434), b"\\x01")
    print(sorted(bpf.maps), sorted(bpf.tracepoints), ports.key_size, ports.value_size,
          ports.lookup(struct.pack("=H", 11434)), ports.lookup(struct.pack("=H", 1)),
          ports.delete(struct.pack("=H", 11434)), ports.delete(struct.pack("=H", 11434)),
          bpf.maps["connect_owners"].max_entries, "bcc" in sys.modules, sep="|")
    bpf.close()
    """
)


@needs_ebpf
@pytest.mark.ebpf
def test_a_program_is_built_in_a_child_and_its_maps_used_by_fd_without_bcc_here():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("|") == [
        "['connect_owners', 'connecting', 'sniffed_ports']", "['sock:inet_sock_set_state']", "2", "1",
        "b'\\x01'", "None", "True", "False", "128",
        "False",  # the process that uses the maps never imported bcc (nor its LLVM)
    ]


@needs_ebpf
@pytest.mark.ebpf
def test_wrong_key_size_is_refused_before_the_kernel_sees_it():
    text = b"BPF_HASH(small, u32, u64, 4);\nint probe(struct pt_regs *ctx) { return 0; }\n"
    bpf = load_bpf("small.c", text, [])
    try:
        table = bpf.maps["small"]
        with pytest.raises(ValueError, match="key/value of 8/8 bytes, the map takes 4/8"):
            table.update(struct.pack("=Q", 1), struct.pack("=Q", 2))
        table.update(struct.pack("=I", 1), struct.pack("=Q", 2))
        assert table.lookup(struct.pack("=I", 1)) == struct.pack("=Q", 2)
        assert sorted(bpf.programs) == ["probe"]
    finally:
        bpf.close()


@needs_ebpf
@pytest.mark.ebpf
def test_a_program_that_does_not_compile_is_one_clear_error():
    with pytest.raises(CaptureError, match=r"compiling/loading broken.c failed: .*"):
        load_bpf("broken.c", b"int probe(struct pt_regs *ctx) { return undeclared_thing; }\n", [])
