"""Two ptys held by this process: one in raw mode with typed-ahead input and pending output,
one in canonical mode with a complete line waiting. All must survive, settings included."""
import fcntl
import os
import struct
import sys
import termios
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
raw_master, raw_slave = os.openpty()
tty.setraw(raw_slave)
fcntl.ioctl(raw_slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
os.write(raw_master, b"typed-ahead\x03\r")  # ^C and CR stay literal in raw mode
os.write(raw_slave, b"pending output\n")
raw_attrs = termios.tcgetattr(raw_slave)
canon_master, canon_slave = os.openpty()
attrs = termios.tcgetattr(canon_slave)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(canon_slave, termios.TCSANOW, attrs)
os.write(canon_master, b"a whole line\n")
canon_attrs = termios.tcgetattr(canon_slave)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check(termios.tcgetattr(raw_slave) == raw_attrs, "raw-mode settings lost")
t.check(termios.tcgetattr(canon_slave) == canon_attrs, "canonical settings lost")
t.check(struct.unpack("HHHH", fcntl.ioctl(raw_slave, termios.TIOCGWINSZ, b"\0" * 8))[:2] == (33, 111),
        "window size lost")
got = os.read(raw_slave, 100)
t.check(got == b"typed-ahead\x03\r", f"typed-ahead input: {got!r}")
got = os.read(raw_master, 100)
t.check(got == b"pending output\n", f"pending output: {got!r}")
got = os.read(canon_slave, 100)
t.check(got == b"a whole line\n", f"canonical line: {got!r}")
os.write(raw_master, b"x")
t.check(os.read(raw_slave, 1) == b"x", "pty no longer connected")
t.passed()
