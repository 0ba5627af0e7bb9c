"""A general-purpose test program: counts forever and publishes its count, optionally
holding extra state. Options come before the status file (the harness appends it last):

    --netlink      hold a netlink socket (unsupported: dump must refuse it by name);
                   repeat for more than one
    --alloc MIB    hold MIB MiB of non-zero memory, checked after restore
    --exit N       exit with status N after a passing verification (default 0)
    --say TEXT     after SIGUSR1, write TEXT to stdout and stderr (checks the writes work)

The count goes to STATUS.tick (rewritten in place) so a test can watch progress.
"""
import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--netlink", action="count", default=0)
parser.add_argument("--alloc", type=int, default=0)
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--say", default=None)
parser.add_argument("status")
opts = parser.parse_args()
sys.argv = [sys.argv[0], opts.status]

t = ckpt_test.Protocol()
tick_fd = os.open(opts.status + ".tick", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
socks = []
for _ in range(opts.netlink):
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.bind((0, 0))
    socks.append((sock, sock.getsockname()[0]))
    t._status(f"netlink-fd {sock.fileno()}")
blocks = [bytearray([(i % 251) + 1]) * (1 << 20) for i in range(opts.alloc)]
n = 0
os.pwrite(tick_fd, b"%20d\n" % n, 0)
t.ready()

while not t.verify_requested:
    n += 1
    os.pwrite(tick_fd, b"%20d\n" % n, 0)
    time.sleep(0.001)

t.check(n > 0, "never counted")
for i, block in enumerate(blocks):
    want = (i % 251) + 1
    t.check(block[0] == want and block[-1] == want and block.count(want) == len(block),
            f"memory block {i} changed")
for sock, portid in socks:
    t.check(sock.getsockname()[0] == portid, "netlink socket lost its address")
if opts.say is not None:
    sys.stdout.write(opts.say + " (stdout)\n")
    sys.stdout.flush()
    sys.stderr.write(opts.say + " (stderr)\n")
    sys.stderr.flush()
t._status("PASS")
sys.exit(opts.exit)
