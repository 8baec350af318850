"""Hold packets in an NFQUEUE for a delay, then let them go: netem's delay
and jitter where the kernel has no sch_netem (this machine's has none).

    ip netns exec NS /usr/bin/python3 nfq_delay.py QUEUE DELAY_MS JITTER_MS

Run inside the namespace whose iptables rules send packets to queue QUEUE
(`-j NFQUEUE --queue-num QUEUE --queue-bypass`: if this process dies, the
packets pass undelayed instead of vanishing).  Each packet is accepted
DELAY_MS +/- JITTER_MS (uniform) after it arrived; with jitter, packets are
reordered as netem's are.  The packets stay in the kernel the whole time:
only their ids travel through this process (copy mode "meta").

Speaks nfnetlink_queue over a raw netlink socket with the struct layouts of
<linux/netfilter/nfnetlink_queue.h>, so it needs no library.  Prints
"ready" once bound; exits on SIGTERM.
"""
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _msg(msg_type, queue, attrs, seq, flags=NLM_F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                       flags, seq, 0) + body


def _config(sock, queue, seq, attrs):
    sock.send(_msg(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | NLM_F_ACK))
    data = sock.recv(65536)
    _, kind, _, _, _ = struct.unpack_from("=IHHII", data, 0)
    if kind == NLMSG_ERROR:
        err = struct.unpack_from("=i", data, 16)[0]
        if err != 0:
            raise OSError(-err, f"nfqueue config: {os.strerror(-err)}")


def _packet_ids(data):
    """The packet ids in one recv's worth of netlink messages."""
    off = 0
    while off + 16 <= len(data):
        length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            return
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20  # nlmsghdr + nfgenmsg
            while a + 4 <= off + length:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if (akind & 0x7fff) == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, a + 4)[0]
                    break
                a += (alen + 3) & ~3
        off += (length + 3) & ~3


def main():
    queue, delay_ms, jitter_ms = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else None)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    _config(sock, queue, 1, [_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))])
    _config(sock, queue, 2, [_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))])
    _config(sock, queue, 3, [_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)

    held = []  # (release time, tie-breaker, packet id)
    seq, n = 10, 0
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, pid = heapq.heappop(held)
            seq += 1
            verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))
            try:
                sock.send(_msg(NFQNL_MSG_VERDICT, queue, [verdict], seq))
            except OSError:
                pass  # the packet was already dropped by the kernel (queue flushed)
        timeout = max(0.0, held[0][0] - now) if held else 1.0
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            continue
        try:
            data = sock.recv(1 << 20)
        except OSError:
            continue  # ENOBUFS: the kernel dropped some; they count as loss
        now = time.monotonic()
        for pid in _packet_ids(data):
            d = delay_ms + (rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0)
            n += 1
            heapq.heappush(held, (now + max(0.0, d) / 1000.0, n, pid))


if __name__ == "__main__":
    main()
