#!/usr/bin/env python3
"""Fails on an integer conversion that can trap, in the modules that read the network.

A Swift conversion such as `UInt32(x)` traps when `x` does not fit, and one trap ends every call in
the process. This check asks the compiler for the type-checked syntax tree of each module
(`swiftc -dump-ast`, with the flags SwiftPM used to build it), finds every unlabeled integer
conversion `T(x)` and flags those where the source type does not always fit in `T`: a narrowing, a
change of sign, or a floating-point value. Widening conversions are never flagged, nor the explicit
forms `T(truncatingIfNeeded:)`, `T(clamping:)`, `T(bitPattern:)`, `T(exactly:)` and
`T(saturating:)` (ParleyWire's, for floating-point values), nor failable parses of strings. A
conversion to a generic integer type (`Self`, `T`) counts as narrowing.

What remains must be listed in scripts/conversions-allowed.txt with the reason it cannot trap:
`path | code | from -> to | why`, where `code` is the conversion's source line, trimmed (so an
entry follows its line when others move). An entry nothing matches any more is an error too, so the
list stays true.

Usage: scripts/check-conversions.py [--build-dir .build] [--list]  (after `swift build`)
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODULES = ["ParleyWire", "ParleyMedia", "ParleySCTP", "ParleySession", "ParleyRelay", "ParleyRouting", "ParleySignaling", "ParleyTransceiver", "ParleyClient", "ParleyIO"]
ALLOWED = os.path.join(ROOT, "scripts", "conversions-allowed.txt")

# Bits and signedness (Int and UInt are 64-bit on every platform Parley builds for).
INTEGERS = {
    "Int8": (8, True), "Int16": (16, True), "Int32": (32, True), "Int64": (64, True), "Int": (64, True),
    "UInt8": (8, False), "UInt16": (16, False), "UInt32": (32, False), "UInt64": (64, False), "UInt": (64, False),
    # C typealiases as the syntax tree names them.
    "CInt": (32, True), "SocketOptionValue": (32, True), "CLong": (64, True), "CUnsignedInt": (32, False),
}
FLOATS = {"Double", "Float", "Float80", "CGFloat"}
# The initializers that convert an integer or a float value: `init(_:)` on the integer protocols and types.
CONVERSION = re.compile(r'decl="Swift\.\(file\)\.(?:(?:Unsigned|Signed|FixedWidth|Binary)Integer(?: extension)?|'
                        r'(?:U?Int(?:8|16|32|64)?))\.init\(_:\)')
CONSTRUCTOR = re.compile(r'constructor_ref_call_expr type="\((\w+)\) -> (\w+)" location=([^ ]+):(\d+):(\d+)')


def fits(source, target):
    """Whether every value of `source` is a value of `target`."""
    if source == target:
        return True
    (source_bits, source_signed), (target_bits, target_signed) = INTEGERS[source], INTEGERS[target]
    if source_signed and not target_signed:
        return False
    if source_signed == target_signed:
        return source_bits <= target_bits
    return source_bits < target_bits  # unsigned into a wider signed type


def compile_arguments(build_dir, module):
    """The swiftc arguments and sources SwiftPM used for `module` (from its build manifest)."""
    manifest = open(os.path.join(build_dir, "debug.yaml")).read()
    match = re.search(r'"C\.%s-[^"]*-debug\.module":\n(.*?)\n\n' % re.escape(module), manifest, re.S)
    if not match:
        sys.exit(f"check-conversions: no build of {module} in {build_dir}/debug.yaml; run `swift build` first")
    block = match.group(1)
    arguments = json.loads(re.search(r"args: (\[.*\])", block).group(1))
    sources = [path for path in json.loads(re.search(r"inputs: (\[.*?\])", block).group(1)) if path.endswith(".swift")]
    with_value = {"-emit-module-path", "-output-file-map", "-index-store-path", "-emit-objc-header-path", "-module-cache-path"}
    alone = {"-emit-dependencies", "-emit-module", "-incremental", "-c", "-enable-batch-mode", "-serialize-diagnostics",
             "-parseable-output", "-emit-objc-header"}
    kept, skip, previous = [], False, None
    for argument in arguments[1:]:
        if skip:
            skip, previous = False, argument
            continue
        if previous != "-Xcc" and (argument in with_value):
            skip, previous = True, argument
            continue
        if previous != "-Xcc" and (argument in alone or argument.startswith("@") or argument.startswith("-j")):
            previous = argument
            continue
        kept.append(argument)
        previous = argument
    return kept, sources


def conversions(build_dir, module):
    """(path, line, column, source type, target type) of every unlabeled integer conversion in `module`."""
    arguments, sources = compile_arguments(build_dir, module)
    cache = os.path.join(build_dir, "conversion-check-cache")
    result = subprocess.run(["swiftc", "-dump-ast", *arguments, "-module-cache-path", cache, *sources],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"check-conversions: swiftc -dump-ast failed for {module}:\n{result.stderr[-3000:]}")
    lines = result.stderr.splitlines()  # the dump goes to standard error
    found = set()
    for index, line in enumerate(lines):
        match = CONSTRUCTOR.search(line)
        if not match or index + 1 >= len(lines) or not CONVERSION.search(lines[index + 1]):
            continue
        source, target, path, row, column = match.groups()
        # A generic target (`Self`, `T`) may be any width: it is checked like a narrowing.
        if target in FLOATS or not (source in INTEGERS or source in FLOATS):
            continue
        found.add((os.path.relpath(path, ROOT), int(row), int(column), source, target))
    return sorted(found)


def load_allowed():
    entries = []
    for number, line in enumerate(open(ALLOWED), 1):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        if len(parts) != 4 or not parts[3]:
            sys.exit(f"{ALLOWED}:{number}: expected `path | code | from -> to | why`")
        entries.append({"path": parts[0], "code": parts[1], "types": parts[2], "why": parts[3], "line": number, "used": 0})
    return entries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, ".build"))
    parser.add_argument("--list", action="store_true", help="print every flagged conversion with its allow-list line")
    options = parser.parse_args()
    allowed = load_allowed()
    sources = {}
    unexplained = []
    total = 0
    for module in MODULES:
        for path, row, column, source, target in conversions(options.build_dir, module):
            if source in INTEGERS and target in INTEGERS and fits(source, target):
                continue
            total += 1
            if path not in sources:
                sources[path] = open(os.path.join(ROOT, path)).read().splitlines()
            code = sources[path][row - 1].strip()
            types = f"{source} -> {target}"
            entry = next((e for e in allowed if e["path"] == path and e["code"] == code and e["types"] == types), None)
            if entry:
                entry["used"] += 1
                if options.list:
                    print(f"{path}:{row}:{column}: {types}: allowed: {entry['why']}")
            else:
                unexplained.append(f"{path}:{row}:{column}: {types} can trap: {code}")
    stale = [f"{ALLOWED}:{e['line']}: matches nothing: {e['path']} | {e['code']}" for e in allowed if e["used"] == 0]
    for problem in unexplained + stale:
        print(problem)
    if unexplained or stale:
        print(f"\ncheck-conversions: {len(unexplained)} conversion(s) that can trap and {len(stale)} stale allow-list "
              "entr(y/ies). Use T(truncatingIfNeeded:), T(clamping:) or T(exactly:) as the protocol says, or add "
              f"`path | code | from -> to | why` to {os.path.relpath(ALLOWED, ROOT)}.")
        return 1
    print(f"check-conversions: {total} narrowing conversion(s) in {len(MODULES)} modules, each allowed with a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
