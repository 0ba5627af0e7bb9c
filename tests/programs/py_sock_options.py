"""Sockets whose options and states must come back exactly: classic BPF filters (on UDP and
on a unix datagram pair, locked), a device binding, buffer locks (SO_BUF_LOCK, with and without a
size), linger, timeouts, marks, priorities, timestamps, TCP keepalive, congestion control
and listener options, IP and IPv6 header options, two listeners sharing a port, UDP-Lite,
multicast groups joined, and UDP sockets shut down for writing
and for reading. Each option is read back and compared; the filters, the linger and the
shutdowns are also tried. A socketpair made by a child, under other ids, that has exited
keeps its creator's pid, uid and gid (SO_PEERCRED). With `--corked`, also a UDP socket corked with data not sent yet,
and with `--ebpf` one with an eBPF filter (each of which a dump must refuse)."""
import ctypes
import errno
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

SO_ATTACH_FILTER, SO_GET_FILTER, SO_BUF_LOCK, SO_TIMESTAMPNS_OLD, SO_LOCK_FILTER = 26, 26, 72, 35, 44
TCP_FASTOPEN = 23
t = ckpt_test.Protocol()
programs = []  # the filters' code, alive while attached


def attach(sock, *insns):
    """Attach a classic BPF program of `insns` (code, jt, jf, k)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
    programs.append(code)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("=HxxxxxxQ", len(insns), ctypes.addressof(code)))


def get_filter(sock):
    libc = ctypes.CDLL(None, use_errno=True)
    count = ctypes.c_uint(0)
    assert libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_GET_FILTER, None, ctypes.byref(count)) == 0
    code = ctypes.create_string_buffer(count.value * 8 or 1)
    if count.value:
        assert libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_GET_FILTER, code, ctypes.byref(count)) == 0
    return code.raw[:count.value * 8]


RET_10 = (0x06, 0, 0, 10)  # "ret #10": the UDP header and 2 bytes of each datagram
WATCHED = [(socket.SOL_SOCKET, name, size) for name, size in (
    (socket.SO_BINDTODEVICE, 16), (socket.SO_KEEPALIVE, 0), (socket.SO_LINGER, 8),
    (socket.SO_RCVTIMEO, 16), (socket.SO_SNDTIMEO, 16), (socket.SO_MARK, 0), (socket.SO_PRIORITY, 0),
    (socket.SO_RCVLOWAT, 0), (socket.SO_REUSEADDR, 0), (socket.SO_REUSEPORT, 0), (SO_BUF_LOCK, 0),
    (socket.SO_BROADCAST, 0), (socket.SO_OOBINLINE, 0), (socket.SO_DONTROUTE, 0),
    (SO_TIMESTAMPNS_OLD, 0), (SO_LOCK_FILTER, 0))] + [
    (socket.IPPROTO_IP, socket.IP_TOS, 0), (socket.IPPROTO_IP, socket.IP_TTL, 0),
    (socket.IPPROTO_IP, socket.IP_TRANSPARENT, 0),
    (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0), (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 0),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0), (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0),
    (socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16), (socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 0),
    (socket.IPPROTO_TCP, TCP_FASTOPEN, 0), (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)]


def snapshot(sock):
    values = {}
    for level, name, size in WATCHED:
        try:
            values[level, name] = sock.getsockopt(level, name, size) if size else sock.getsockopt(level, name)
        except OSError:
            pass
    return values, {n: sock.getsockopt(socket.SOL_SOCKET, n) for n in (socket.SO_SNDBUF, socket.SO_RCVBUF)}


socks = {}
# a UDP socket with a filter, bound to lo, timestamps on
socks["filtered"] = udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attach(udp, RET_10)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
udp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS_OLD, 1)
udp.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
udp.bind(("127.0.0.1", 0))
# a unix datagram pair whose receiver filters
socks["unix"], unix_sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
attach(socks["unix"], (0x06, 0, 0, 3))
socks["unix"].setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
socks["unix"].setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("=qq", 2, 500000))
# unconnected TCP sockets: options galore, and each kind of buffer lock
socks["tcp"] = tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 12345)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("=ii", 1, 5))
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("=qq", 7, 0))
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 42)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 3)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 10)
tcp.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
for name, lock in (("lock-send", 1), ("lock-both", 3)):
    socks[name] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks[name].setsockopt(socket.SOL_SOCKET, SO_BUF_LOCK, lock)
socks["sized"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
socks["sized"].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 50000)
socks["sized-unlocked"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
socks["sized-unlocked"].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 50000)
socks["sized-unlocked"].setsockopt(socket.SOL_SOCKET, SO_BUF_LOCK, 0)
# a listener with its own options
socks["listener"] = listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 3)
listener.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 5)
listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x20)
listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 9)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
listener.bind(("::1", 0))
listener.listen(4)
# two listeners sharing a port, the first without SO_REUSEPORT since it listens
socks["shared-a"], socks["shared-b"] = (socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2))
for s in (socks["shared-a"], socks["shared-b"]):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", socks["shared-a"].getsockname()[1]))
    s.listen(2)
socks["shared-a"].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
# a UDP-Lite socket checksumming only the first 20 bytes it sends, bound and connected
UDPLITE_SEND_CSCOV = 10
socks["udplite"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)
socks["udplite"].setsockopt(socket.IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, 20)
socks["udplite"].bind(("127.0.0.1", 0))
socks["udplite"].connect(socks["udplite"].getsockname())
WATCHED.append((socket.IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, 0))
# UDP sockets that joined multicast groups, on IPv4 and IPv6
lo = socket.if_nametoindex("lo")
socks["multicast"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
socks["multicast"].setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                              struct.pack("=4s4si", socket.inet_aton("239.7.7.7"), bytes(4), lo))
socks["multicast6"] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
socks["multicast6"].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                               socket.inet_pton(socket.AF_INET6, "ff02::7:7") + struct.pack("=I", lo))
# connected UDP sockets shut down for writing and for reading
socks["shut-wr"], socks["shut-rd"] = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
for s in (socks["shut-wr"], socks["shut-rd"]):
    s.bind(("127.0.0.1", 0))
socks["shut-wr"].connect(socks["shut-rd"].getsockname())
socks["shut-rd"].connect(socks["shut-wr"].getsockname())
socks["shut-wr"].shutdown(socket.SHUT_WR)
socks["shut-rd"].shutdown(socket.SHUT_RD)
if "--corked" in sys.argv:
    UDP_CORK = 1
    socks["corked"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socks["corked"].setsockopt(socket.IPPROTO_UDP, UDP_CORK, 1)
    socks["corked"].sendto(b"held back", udp.getsockname())
# a socketpair made by a child under other ids, which passed it here and exited
channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
maker = os.fork()
if maker == 0:
    try:
        os.setgid(os.getgid() + 1)
        os.setuid(os.getuid() + 1)
        made = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        socket.send_fds(child_end, [b"pair"], [made[0].fileno(), made[1].fileno()])
    finally:
        os._exit(0)
_, fds, _, _ = socket.recv_fds(channel, 4, 2)
os.waitpid(maker, 0)
made = [socket.socket(fileno=fd) for fd in fds]
UCRED = struct.Struct("=iII")
creator = UCRED.unpack(made[0].getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
t.check(creator == (maker, os.getuid() + 1, os.getgid() + 1), f"the child's socketpair shows {creator}")
if "--ebpf" in sys.argv:  # a socket filter program "return 0", loaded with bpf()
    SYS_BPF, BPF_PROG_LOAD, BPF_PROG_TYPE_SOCKET_FILTER, SO_ATTACH_BPF = 321, 5, 1, 50
    insns = struct.pack("=BBhi", 0xB7, 0, 0, 0) + struct.pack("=BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
    code, license = ctypes.create_string_buffer(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(struct.pack("=IIQQ", BPF_PROG_TYPE_SOCKET_FILTER, 2, ctypes.addressof(code),
                                                   ctypes.addressof(license)), 128)
    prog = ctypes.CDLL(None, use_errno=True).syscall(SYS_BPF, BPF_PROG_LOAD, attr, 128)
    t.check(prog >= 0, f"bpf(BPF_PROG_LOAD): errno {ctypes.get_errno()}")
    socks["ebpf"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socks["ebpf"].setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog)
    os.close(prog)

before = {name: snapshot(s) for name, s in socks.items()}
filters = {name: get_filter(socks[name]) for name in ("filtered", "unix")}  # (an eBPF one cannot be read)
t.check(all(filters.values()), "a filter was not attached")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

for name, s in socks.items():
    now = snapshot(s)
    for key, value in before[name][0].items():
        t.check(now[0].get(key) == value, f"{name}: option {key} is {now[0].get(key)!r}, was {value!r}")
    t.check(now[1] == before[name][1], f"{name}: buffer sizes {now[1]} were {before[name][1]}")
for end in made:
    now = UCRED.unpack(end.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    t.check(now == creator, f"the child's socketpair shows {now}, not its creator {creator}")
made[0].send(b"still a pair")
t.check(made[1].recv(100) == b"still a pair", "the child's socketpair")
t.check(socks["udplite"].proto == socket.IPPROTO_UDPLITE, "the UDP-Lite socket is no longer one")
socks["udplite"].send(b"to itself")
t.check(socks["udplite"].recv(100) == b"to itself", "the UDP-Lite socket")
for name, level, option, request in (
        ("multicast", socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
         struct.pack("=4s4si", socket.inet_aton("239.7.7.7"), bytes(4), lo)),
        ("multicast6", socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
         socket.inet_pton(socket.AF_INET6, "ff02::7:7") + struct.pack("=I", lo))):
    try:  # joining again fails only for a member
        socks[name].setsockopt(level, option, request)
        t.check(False, f"{name}: the multicast group membership is lost")
    except OSError as err:
        t.check(err.errno == errno.EADDRINUSE, f"{name}: joining again: {err}")
t.check(socks["shared-a"].getsockname() == socks["shared-b"].getsockname(), "the shared port")
for name, program in filters.items():
    t.check(get_filter(socks[name]) == program, f"{name}: the socket filter is lost or changed")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
    sender.sendto(b"hello", udp.getsockname())
    t.check(udp.recv(100) == b"he", "the UDP filter does not cut datagrams to 2 bytes")
unix_sender.send(b"hello")
t.check(socks["unix"].recv(100) == b"hel", "the unix filter does not cut messages to 3 bytes")
try:
    socks["shut-wr"].send(b"x")
    t.check(False, "a UDP socket shut down for writing sends")
except BrokenPipeError:
    pass
poller = select.poll()  # (a read does not see the shutdown: poll does)
poller.register(socks["shut-rd"], select.POLLRDHUP)
t.check(poller.poll(0) == [(socks["shut-rd"].fileno(), select.POLLRDHUP)],
        "a UDP socket shut down for reading is no longer seen so")
t.passed()
