"""Process attributes: cwd, umask, rlimits, name (comm), environment, oom_score_adj,
session. The expected values are set here, then checked after restore."""
import ctypes
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

PR_SET_NAME, PR_GET_NAME = 15, 16
NAME = b"ckpt-attrs"
NOFILE_SOFT = 64  # below what the restorer needs while rebuilding: it must put it back
CORE = (12345 * 4096, 54321 * 4096)
libc = ctypes.CDLL(None, use_errno=True)
libc.getenv.restype = ctypes.c_char_p

t = ckpt_test.Protocol()
cwd = os.path.join(os.path.dirname(os.path.abspath(t.path)), "a work dir")
os.makedirs(cwd, exist_ok=True)
os.chdir(cwd)
os.umask(0o027)
nofile = (NOFILE_SOFT, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
resource.setrlimit(resource.RLIMIT_CORE, CORE)
libc.prctl(PR_SET_NAME, NAME, 0, 0, 0)
os.environ["CKPT_SET_INSIDE"] = "set after start = yes"
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("123")
t.ready()

while not t.verify_requested:
    time.sleep(0.002)

t.check(os.getcwd() == cwd, f"cwd {os.getcwd()!r}, expected {cwd!r}")
t.check(os.path.exists("../" + os.path.basename(t.path)), "relative paths no longer resolve")
umask = os.umask(0o022)
t.check(umask == 0o027, f"umask {umask:o}, expected 27")
t.check(resource.getrlimit(resource.RLIMIT_NOFILE) == nofile,
        f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)}, expected {nofile}")
t.check(resource.getrlimit(resource.RLIMIT_CORE) == CORE,
        f"RLIMIT_CORE {resource.getrlimit(resource.RLIMIT_CORE)}, expected {CORE}")
buf = ctypes.create_string_buffer(16)
libc.prctl(PR_GET_NAME, buf, 0, 0, 0)
t.check(buf.value == NAME, f"prctl name {buf.value!r}")
with open("/proc/self/comm", "rb") as f:
    comm = f.read().strip()
t.check(comm == NAME, f"comm {comm!r}")
t.check(os.environ.get("CKPT_FROM_PARENT") == "inherited value", "inherited variable lost")
t.check(os.environ.get("CKPT_SET_INSIDE") == "set after start = yes", "os.environ lost a variable")
t.check(libc.getenv(b"CKPT_SET_INSIDE") == b"set after start = yes", "C environ lost a variable")
with open("/proc/self/environ", "rb") as f:
    t.check(b"CKPT_FROM_PARENT=inherited value\0" in f.read(), "/proc/self/environ changed")
with open("/proc/self/oom_score_adj") as f:
    t.check(f.read().strip() == "123", "oom_score_adj changed")
t.check(os.getsid(0) == os.getpid() == os.getpgid(0), "no longer a session leader")
t.passed()
