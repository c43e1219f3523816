"""`python bench/measured.py RESULT CAP_MB COMMAND...`: run COMMAND, capped at CAP_MB of address
space, and write its wait status and its own peak memory (ru_maxrss, KiB) to RESULT.

Why a launcher: on Linux a process's ru_maxrss starts at the peak of the process that forked it,
so a command started straight from a large process (pytest after many tests, a campaign that has
loaded a model) reports that process's size. This launcher is small and freshly started, so the
command it starts reports what it took itself. It imports nothing beyond the standard library and
leaves the command's own exit code to RESULT (its own is that code, or 128 + the signal)."""

import os
import resource
import sys

result, cap_mb, *argv = sys.argv[1:]
cap = int(cap_mb) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
child = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(child, 0)
with open(result + ".part", "w") as out:
    out.write(f"{status} {usage.ru_maxrss}\n")
os.replace(result + ".part", result)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
