"""Exec a command under a seccomp filter like the unit's SystemCallFilter= (systemd is not PID 1 here).

Run with Debian's /usr/bin/python3 (it has python3-seccomp):

    python3 seccomp_exec.py ALLOWED_SYSCALLS_FILE [--deny-write-execute] -- COMMAND ARGS...

Every system call not listed in ALLOWED_SYSCALLS_FILE fails with EPERM (SystemCallErrorNumber=EPERM);
the list is the unit's filter expanded by `systemd-analyze syscall-filter` (see the test).
--deny-write-execute approximates MemoryDenyWriteExecute=yes with its system-call rules: no mmap() that is
both writable and executable, no mprotect()/pkey_mprotect() that adds PROT_EXEC (systemd also refuses
shmat(SHM_EXEC), and on newer kernels sets PR_SET_MDWE instead; neither is reproduced here).
Also sets UMask=0077. no_new_privs is set by libseccomp when the filter is loaded (as NoNewPrivileges=yes).
"""

from __future__ import annotations

import errno
import os
import sys

import seccomp

PROT_WRITE, PROT_EXEC = 0x2, 0x4


def main() -> None:
    sep = sys.argv.index("--")
    allowed_file, options, command = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1:]
    with open(allowed_file) as fh:
        names = set(fh.read().split())
    flt = build_filter(names, "--deny-write-execute" in options)
    os.umask(0o077)
    flt.load()
    os.execvp(command[0], command)


def build_filter(names: set[str], deny_write_execute: bool) -> seccomp.SyscallFilter:
    """Allow ``names``; with ``deny_write_execute``, mmap(W|X) and mprotect/pkey_mprotect(+X) fail with EPERM."""
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    guarded = {"mmap", "mprotect", "pkey_mprotect"} if deny_write_execute else set()
    for name in names - guarded:
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call on this architecture
    both = PROT_WRITE | PROT_EXEC
    if "mmap" in names & guarded:
        for allowed in (0, PROT_WRITE, PROT_EXEC):
            flt.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, allowed))
    for call in ("mprotect", "pkey_mprotect"):
        if call in names & guarded:
            flt.add_rule(seccomp.ALLOW, call, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, 0))
    return flt


if __name__ == "__main__":
    main()
