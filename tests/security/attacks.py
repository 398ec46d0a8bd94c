"""The attack catalogue: hostile programs, what must contain them, and the status they end with.

Every attack prints what it tried; a line starting with `BREACH` means it got through. Each case
states the containment it expects (`contained_by`) and the result `status`. The cases are
backend-agnostic: they only use the HTTP API, so every backend runs the same suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A tiny helper every Python attack gets: raw syscalls through libc, answering (ret, errno name).
PRELUDE = r"""
import ctypes, errno, os, sys
_libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return ret, errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def expect_fail(label, nr, *args, ok=("EPERM",)):
    ret, err = sc(nr, *args)
    print(("BLOCKED" if ret == -1 and err in ok else "BREACH"), label, ret, err)
def try_open(label, path, flags=os.O_RDONLY):
    try:
        fd = os.open(path, flags); os.close(fd); print("BREACH", label, path)
    except OSError as e:
        print("BLOCKED", label, errno.errorcode.get(e.errno, e.errno))
"""


@dataclass(frozen=True)
class Attack:
    id: str
    cls: str
    code: str
    contained_by: str
    status: str | tuple[str, ...] = "ok"
    language: str = "python"
    blocked: int = 0  # how many BLOCKED lines the program must print (0: not counted)
    expect: tuple[str, ...] = ()  # substrings that must appear in stdout
    limits: dict[str, Any] = field(default_factory=dict)

    def source(self) -> str:
        return PRELUDE + self.code if self.language == "python" else self.code


def syscall_attacks(cls: str, contained_by: str, calls: list[tuple[str, str]]) -> list[Attack]:
    """One case per raw syscall that must fail (label, call expression)."""
    return [
        Attack(f"{cls}-{label}", cls, f"expect_fail({label!r}, {call})", contained_by, blocked=1)
        for label, call in calls
    ]


I386_GETPID = r"""
import mmap
code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20 (i386 getpid); int 0x80; ret
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
print("trying int 0x80", flush=True)
print("BREACH i386 getpid returned", fn())
"""

ATTACKS: list[Attack] = [
    # ---- resource exhaustion -------------------------------------------------------------
    Attack(
        "fork-bomb-bash",
        "exhaustion",
        ":(){ :|:& };:; sleep 30",
        "cgroup pids limit",
        "timeout",
        language="bash",
        limits={"pids": 32, "wall_time_s": 2},
    ),
    Attack(
        "fork-bomb-python",
        "exhaustion",
        "import time\nn = 0\nwhile True:\n    try:\n        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n        n += 1\n"
        "    except OSError as e:\n        print('BLOCKED fork refused after', n, e.errno);"
        " break\n",
        "cgroup pids limit",
        "ok",
        blocked=1,
        limits={"pids": 32},
    ),
    Attack(
        "thread-bomb",
        "exhaustion",
        "import threading, time\nn = 0\ntry:\n    while n < 10000:\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); n += 1\n"
        "except RuntimeError:\n    print('BLOCKED threads refused after', n)\n"
        "os._exit(0)\n",
        "cgroup pids limit",
        blocked=1,
        limits={"pids": 32},
    ),
    Attack(
        "memory-bomb",
        "exhaustion",
        "x = []\nwhile True: x.append(bytearray(16 << 20))",
        "cgroup memory limit",
        "memory_limit",
        limits={"memory_mib": 64},
    ),
    Attack(
        "memory-many-processes",
        "exhaustion",
        "import time\nfor _ in range(12):\n    if os.fork() == 0:\n"
        "        b = bytearray(16 << 20); time.sleep(30); os._exit(0)\n"
        "os.wait(); sys.exit(1)\n",
        "cgroup memory limit over the whole tree",
        "memory_limit",
        limits={"memory_mib": 96},
    ),
    Attack(
        "tmpfs-fill",
        "exhaustion",
        "try:\n    with open('/tmp/fill', 'wb') as f:\n"
        "        while True: f.write(b'x' * (1 << 20)); f.flush()\n"
        "except OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno])\n",
        "tmpfs size",
        blocked=1,
        expect=("ENOSPC",),
        limits={"disk_mib": 8},
    ),
    Attack(
        "shm-fill",
        "exhaustion",
        "try:\n    with open('/dev/shm/fill', 'wb') as f:\n"
        "        while True: f.write(b'x' * (1 << 20)); f.flush()\n"
        "except OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno])\n",
        "/dev/shm shares the run's tmpfs",
        blocked=1,
        expect=("ENOSPC",),
        limits={"disk_mib": 8},
    ),
    Attack(
        "inode-fill",
        "exhaustion",
        "n = 0\ntry:\n    while n < 200000: os.mkdir(f'd{n}'); n += 1\n"
        "except OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno], n)\n",
        "tmpfs nr_inodes",
        blocked=1,
        expect=("ENOSPC",),
        limits={"disk_mib": 8},
    ),
    Attack(
        "fd-exhaustion",
        "exhaustion",
        "fds = []\ntry:\n    while len(fds) < 100000: fds.append(os.open('/dev/null', 0))\n"
        "except OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno], len(fds) < 1024)\n",
        "RLIMIT_NOFILE",
        blocked=1,
        expect=("EMFILE True",),
    ),
    Attack(
        "stdout-flood",
        "exhaustion",
        "while True: sys.stdout.write('A' * 65536)",
        "per-stream output cap",
        "output_limit",
        limits={"output_bytes": 200_000},
    ),
    Attack(
        "stderr-flood",
        "exhaustion",
        "while True: sys.stderr.write('B' * 65536)",
        "per-stream output cap",
        "output_limit",
        limits={"output_bytes": 200_000},
    ),
    Attack(
        "busy-loop",
        "exhaustion",
        "while True: pass",
        "cgroup cpu accounting",
        "cpu_limit",
        limits={"cpu_time_s": 1, "wall_time_s": 10},
    ),
    Attack(
        "ignore-sigterm",
        "exhaustion",
        "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True: time.sleep(0.1)\n",
        "SIGKILL of the whole cgroup at the wall limit",
        "timeout",
        limits={"wall_time_s": 1},
    ),
    Attack(
        "stopped-child",
        "exhaustion",
        "import signal, time\npid = os.fork()\nif pid == 0:\n"
        "    os.kill(os.getpid(), signal.SIGSTOP); time.sleep(60); os._exit(0)\n"
        "os.waitpid(pid, 0)\n",
        "SIGKILL reaches stopped processes",
        "timeout",
        limits={"wall_time_s": 1},
    ),
    Attack(
        "double-fork-daemon",
        "exhaustion",
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        import time; time.sleep(300)\n    os._exit(0)\nos.wait(); print('detached')\n",
        "kill-all of the run's cgroup at its end",
        expect=("detached",),
    ),
    # ---- host secrets --------------------------------------------------------------------
    Attack(
        "read-shadow",
        "secrets",
        "try_open('shadow', '/etc/shadow')",
        "the host's /etc/shadow is not mounted (an image's own is root-only)",
        blocked=1,
    ),
    Attack(
        "proc-environ-scan",
        "secrets",
        "found = []\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
        "        try: found.append(open(f'/proc/{p}/environ','rb').read())\n"
        "        except OSError: pass\n"
        "blob = b''.join(found)\n"
        "print('BREACH' if b'daemon-secret-value' in blob else 'BLOCKED', 'environ scan',"
        " len(found))\n",
        "pid namespace and an empty environment",
        blocked=1,
    ),
    Attack(
        "other-processes",
        "secrets",
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "others = [p for p in pids if p not in (1, os.getpid())]\n"
        "print('BLOCKED' if not others else 'BREACH', 'visible pids', pids)\n",
        "pid namespace (pid 1 is the run itself or its init)",
        blocked=1,
    ),
    Attack(
        "host-root-via-proc",
        "secrets",
        "for p in ('/proc/1/root/etc/shadow', '/proc/self/root/root', '/proc/1/cwd/../../root'):"
        "\n    try_open('proc root', p)\n",
        "the jail's root is its own tmpfs",
        blocked=3,
    ),
    Attack(
        "kernel-memory",
        "secrets",
        "for p in ('/proc/kcore', '/dev/mem', '/dev/kmem', '/dev/port'):\n"
        "    try:\n        data = open(p, 'rb').read(4)\n"
        "        print('BREACH' if data else 'BLOCKED', 'kernel memory', p)\n"
        "    except OSError as e:\n        print('BLOCKED', 'kernel memory', p)\n"
        "try_open('sysrq', '/proc/sysrq-trigger', os.O_WRONLY)\n",
        "no kernel memory devices; /proc read-only or masked",
        blocked=5,
    ),
    Attack(
        "host-files",
        "secrets",
        "for p in ('/root/.pyenv', '/work', '/var/lib/sandboxd', '/run/docker.sock',"
        " '/var/run/docker.sock', '/var/tmp/sandboxd-tests'):\n"
        "    print('BREACH' if os.path.exists(p) else 'BLOCKED', 'host path', p)\n",
        "the host's files (its home, this repo, the state dir, the Docker socket) are not mounted",
        blocked=6,
    ),
    # ---- writing outside the workspace ---------------------------------------------------
    Attack(
        "write-system-dirs",
        "write-outside",
        "for p in ('/usr/pwned', '/etc/pwned', '/pwned', '/bin/pwned', '/proc/sys/kernel/pwned'):"
        "\n    try_open('write', p, os.O_WRONLY | os.O_CREAT)\n",
        "read-only mounts",
        blocked=5,
    ),
    Attack(
        "remount-rw",
        "write-outside",
        "expect_fail('remount', 165, 0, 0, 0, 32 | 0x20, 0)",  # mount(NULL,NULL,..,REMOUNT)
        "seccomp denies mount",
        blocked=1,
    ),
    Attack(
        "overwrite-proc-self-exe",
        "write-outside",
        "try_open('exe', '/proc/self/exe', os.O_WRONLY)\n"
        "try_open('python', '/usr/bin/python3', os.O_WRONLY)\n",
        "read-only /usr (CVE-2019-5736 needs a writable host binary)",
        blocked=2,
    ),
    # ---- links ----------------------------------------------------------------------------
    Attack(
        "hardlink-host-file",
        "links",
        "try:\n    os.link('/usr/bin/python3', 'hl'); print('BREACH hard link made')\n"
        "except OSError as e:\n    print('BLOCKED hardlink', errno.errorcode[e.errno])\n",
        "workspace is its own filesystem (EXDEV)",
        blocked=1,
        expect=("EXDEV",),
    ),
    Attack(
        "symlink-in-collect",
        "links",
        "os.symlink('/etc/passwd', 'passwd.txt'); os.symlink('/', 'rootdir')\n"
        "open('plain.txt', 'w').write('ok'); print('links planted')\n",
        "collection never follows links",
        expect=("links planted",),
    ),
    # ---- leaked fds and cwd (CVE-2024-21626) ---------------------------------------------
    Attack(
        "leaked-fds",
        "fds",
        "open_fds = []\nfor fd in range(3, 4096):\n    try: os.fstat(fd); open_fds.append(fd)\n"
        "    except OSError: pass\n"
        "print('BLOCKED' if not open_fds else 'BREACH', 'extra fds', open_fds)\n",
        "nsjail closes every fd but 0/1/2",
        blocked=1,
    ),
    Attack(
        "cwd-escape",
        "fds",
        "os.chdir('/proc/self/cwd/../../../..')\n"
        "print('BLOCKED' if sorted(os.listdir('.')) == sorted(os.listdir('/')) else 'BREACH',"
        " 'cwd', os.getcwd())\n",
        "cwd inside the jail's mount namespace",
        blocked=1,
    ),
    # ---- capabilities, setuid -------------------------------------------------------------
    Attack(
        "capabilities",
        "privileges",
        "caps = {l.split(':')[0]: l.split(':')[1].strip() for l in open('/proc/self/status')"
        " if l.startswith(('Cap', 'NoNewPrivs'))}\n"
        "bad = {k: v for k, v in caps.items() if k.startswith('Cap') and int(v, 16)}\n"
        "print('BLOCKED' if not bad and caps['NoNewPrivs'] == '1' else 'BREACH', caps)\n",
        "all capabilities dropped, no_new_privs",
        blocked=1,
    ),
    Attack(
        "setuid-root",
        "privileges",
        "expect_fail('setuid', 105, 0, ok=('EPERM', 'EINVAL'))\n"
        "expect_fail('setgid', 106, 0, ok=('EPERM', 'EINVAL'))\n"
        "expect_fail('setgroups', 116, 0, 0)\n",
        "uid 0 is unmapped in the user namespace; no CAP_SETUID",
        blocked=3,
    ),
    Attack(
        "setuid-binaries",
        "privileges",
        "su=$(su -c 'id -u' root </dev/null 2>&1 | tail -1); "
        "mnt=$(mount -t tmpfs none /tmp 2>&1 && echo MOUNTED); "
        '[ "$su" = 0 ] && echo BREACH su || echo BLOCKED su; '
        '[ "$mnt" = MOUNTED ] && echo BREACH mount || echo BLOCKED mount',
        "no_new_privs ignores setuid bits",
        "ok",
        language="bash",
        blocked=2,
    ),
    Attack(
        "chown-to-root",
        "privileges",
        "open('f', 'w').close()\ntry:\n    os.chown('f', 0, 0); print('BREACH chown')\n"
        "except OSError as e:\n    print('BLOCKED chown', errno.errorcode[e.errno])\n",
        "no CAP_CHOWN",
        blocked=1,
    ),
    # ---- other processes -------------------------------------------------------------------
    *syscall_attacks(
        "ptrace",
        "seccomp denies ptrace and cross-process memory",
        [
            ("ptrace-traceme", "101, 0, 0, 0, 0"),
            ("ptrace-attach", "101, 16, 1, 0, 0"),
            ("process-vm-readv", "310, 1, 0, 0, 0, 0, 0"),
            ("process-vm-writev", "311, 1, 0, 0, 0, 0, 0"),
        ],
    ),
    Attack(
        "kill-everything",
        "signals",
        "import signal, time\nchild = os.fork()\nif child == 0:\n    time.sleep(30); os._exit(0)\n"
        "os.kill(-1, signal.SIGKILL)\n_, status = os.waitpid(child, 0)\n"
        "print('BLOCKED kill(-1) reached only this jail; child signal', os.WTERMSIG(status))\n",
        "pid namespace: -1 means this jail only",
        blocked=1,
        expect=("child signal 9",),
    ),
    Attack(
        "signal-supervisor",
        "signals",
        "import signal\nhits = []\nfor pid in range(2, 4096):\n"
        "    if pid == os.getpid():\n        continue\n"
        "    try: os.kill(pid, signal.SIGKILL); hits.append(pid)\n    except OSError: pass\n"
        "print('BLOCKED' if not hits else 'BREACH', 'signalled', hits)\n",
        "the supervisor and the daemon are outside the pid namespace",
        blocked=1,
    ),
    # ---- namespaces ----------------------------------------------------------------------
    *syscall_attacks(
        "namespaces",
        "seccomp denies namespace creation and entry",
        [
            ("unshare-user", "272, 0x10000000"),
            ("unshare-mount", "272, 0x00020000"),
            ("clone-newuser", "56, 0x10000000 | 17, 0, 0, 0, 0"),
            ("setns", "308, 0, 0"),
            ("chroot", "161, 0"),
            ("pivot-root", "155, 0, 0"),
        ],
    ),
    Attack(
        "clone3",
        "namespaces",
        "expect_fail('clone3', 435, 0, 0, ok=('ENOSYS',))",
        "seccomp answers ENOSYS (flags cannot be inspected)",
        blocked=1,
    ),
    # ---- kernel interfaces -----------------------------------------------------------------
    *syscall_attacks(
        "kernel",
        "seccomp denies the interface",
        [
            ("bpf", "321, 0, 0, 0"),
            ("perf-event-open", "298, 0, 0, -1, -1, 0"),
            ("userfaultfd", "323, 0"),
            ("io-uring-setup", "425, 8, 0"),
            ("keyctl", "250, 0, 0, 0, 0, 0"),
            ("add-key", "248, 0, 0, 0, 0, 0"),
            ("init-module", "175, 0, 0, 0"),
            ("finit-module", "313, 0, 0, 0"),
            ("delete-module", "176, 0, 0"),
            ("kexec-load", "246, 0, 0, 0, 0"),
            ("open-by-handle-at", "304, 0, 0, 0"),
            ("personality-read-implies-exec", "135, 0x0400000"),
            ("iopl", "172, 3"),
            ("syslog", "103, 3, 0, 0"),
        ],
    ),
    Attack(
        "i386-abi",
        "kernel",
        I386_GETPID,
        "seccomp architecture check kills foreign-ABI syscalls",
        "killed",
        expect=("trying int 0x80",),
    ),
    Attack(
        "x32-abi",
        "kernel",
        "ret, err = sc(0x40000000 | 101, 0, 0, 0, 0)\n"
        "print('BLOCKED' if ret == -1 else 'BREACH', 'x32 ptrace', err)\n",
        "x32 numbers denied or killed (and absent from this kernel)",
        ("ok", "killed"),
    ),
    # ---- sockets -------------------------------------------------------------------------
    Attack(
        "socket-families",
        "sockets",
        "import socket\nfor name, fam, kind, proto in [('packet', 17, 3, 0), ('vsock', 40, 1, 0),"
        " ('alg', 38, 5, 0), ('bluetooth', 31, 1, 0), ('netlink-audit', 16, 3, 9),"
        " ('netlink-uevent', 16, 3, 15), ('raw-inet', 2, 3, 1), ('raw-inet6', 10, 3, 58),"
        " ('packet-inet', 2, 10, 0)]:\n"
        "    try:\n        socket.socket(fam, kind, proto); print('BREACH', name)\n"
        "    except OSError as e:\n        print('BLOCKED', name, errno.errorcode[e.errno])\n"
        "print('ifaces', socket.if_nameindex())\n",
        "seccomp socket rules; netlink route still works",
        blocked=9,
        expect=("ifaces [(1, 'lo')]",),
    ),
    # ---- /dev -------------------------------------------------------------------------------
    Attack(
        "dev-nodes",
        "dev",
        "import stat\ntry:\n    os.mknod('mem', stat.S_IFCHR | 0o666, os.makedev(1, 1));"
        " print('BREACH mknod')\nexcept OSError as e:\n"
        "    print('BLOCKED mknod', errno.errorcode[e.errno])\n"
        "for p in ('/dev/kmsg', '/dev/sda', '/dev/vda', '/dev/tty', '/dev/fuse', '/dev/net/tun'):"
        "\n    try_open('dev', p)\n"
        "os.write(os.open('/dev/null', os.O_WRONLY), b'x')\n"
        "try:\n    os.write(os.open('/dev/full', os.O_WRONLY), b'x')\n"
        "except OSError as e:\n    print('dev/full', errno.errorcode[e.errno])\n",
        "a minimal /dev",
        blocked=7,
        expect=("dev/full ENOSPC",),
    ),
    # ---- clock and hostname ----------------------------------------------------------------
    *syscall_attacks(
        "host-state",
        "seccomp denies clock and hostname changes",
        [
            ("settimeofday", "164, 0, 0"),
            ("clock-settime", "227, 0, 0"),
            ("adjtimex", "159, 0"),
            ("sethostname", "170, 0, 0"),
        ],
    ),
    # ---- network ---------------------------------------------------------------------------
    Attack(
        "dns",
        "network",
        "import socket\ntry:\n"
        "    socket.getaddrinfo('example.com', 443); print('BREACH resolved')\n"
        "except OSError as e:\n    print('BLOCKED dns', e.errno)\n",
        "no resolver, no route",
        blocked=1,
    ),
    Attack(
        "routes",
        "network",
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "print('BLOCKED' if not routes else 'BREACH', 'routes', routes)\n",
        "network namespace with loopback only",
        blocked=1,
    ),
    Attack(
        "ping-socket",
        "network",
        "import socket\n"
        "for fam, proto in [(socket.AF_INET, 1), (socket.AF_INET6, 58)]:\n"
        "    try:\n"
        "        socket.socket(fam, socket.SOCK_DGRAM, proto); print('BREACH ping', fam)\n"
        "    except OSError as e:\n        print('BLOCKED ping', errno.errorcode[e.errno])\n",
        "no ping group (net.ipv4.ping_group_range '1 0' in Docker, as nsjail's user namespace)",
        blocked=2,
        expect=("BLOCKED ping EACCES",),
    ),
]
