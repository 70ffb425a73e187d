"""Helpers the benchmark scripts share: free loopback ports, a process's CPU time and memory from /proc,
and rewriting a generated section of docs/benchmarks.md."""
import os
import socket
import sys

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The API key the benchmarks' `parley dev` takes; `parley load` and pionclient read it from the
# environment, the aiortc client from AUTH. A Pion reference server ignores the header.
API_KEY = "sk_bench_0123456789abcdef0123"
os.environ["PARLEY_API_KEY"] = API_KEY
AUTH = {"Authorization": "Bearer " + API_KEY}
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE


def wait_until_healthy(url, seconds=10):
    """Polls a server's health URL until it answers; False if it never did."""
    import time
    import urllib.request
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.1)
    return False


def update_markdown(path, section, text):
    """Replaces what lies between `<!-- section:begin -->` and `<!-- section:end -->` in `path`."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    with open(path) as f:
        document = f.read()
    if begin not in document or end not in document:
        print(f"{path} has no {section} markers: table not written there", file=sys.stderr)
        return
    head, rest = document.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text + end + tail)


if __name__ == "__main__":
    # python3 scripts/benchlib.py SECTION docs/benchmarks.md < table.md: writes a generated section.
    section, path = sys.argv[1], sys.argv[2]
    import time
    update_markdown(path, section, f"Latest run: {time.strftime('%Y-%m-%d')} (`make {section}`).\n\n" + sys.stdin.read())
