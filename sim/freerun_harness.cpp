// Free-running Verilator harness of a byte-stream SoC (fxtrain.sim.freerun builds it; docs/protocol.md §1).
//
// The SoC's host-to-device byte stream (rx) is fed from stdin, its device-to-host stream (tx) goes to stdout.
// Port names come from "harness_ports.h", written by fxtrain.sim.freerun from the Amaranth component's
// signature: RX_VALID/RX_READY/RX_PAYLOAD, TX_VALID/TX_READY/TX_PAYLOAD (expressions on `top`), and
// SET_CLOCKS(v)/SET_RESETS(v) (every clock input driven by one clock, every reset input held high after start).
//
// Clocking: one cycle = inputs set with the clock low, eval, handshakes sampled, rising edge, eval. A byte moves
// when valid and ready were both high before the edge (tx ready is always high: the SoC never waits for the
// host). The clock runs in spans (MIN_SPAN cycles after the host wrote, doubling up to POLL_CYCLES) between
// non-blocking polls of the pipes while bytes are pending or the SoC is busy. "Busy" is decided without knowing the design: the model's whole state (the
// Verilator root object, design flattened) is compared before and after the last cycle of a span; when it did
// not change, no rx byte is pending and every tx byte has been written, the design sits at a fixed point of its
// inputs (nothing would ever change by running on) and the harness blocks in poll() until the host writes.
// A partial frame keeps the SoC's idle-timeout counter moving, so the frame timeout expires as on a board.
//
// Control pipe (file descriptors given by --control IN,OUT): each line "sync" is answered, once the SoC is at
// its fixed point with nothing pending and every tx byte written to stdout, by "idle CYCLES RUN_NS\n": cycles
// simulated since start and nanoseconds spent running them. Transport.resync uses it.
//
// With FXTRAIN_HARNESS_DEBUG set in the environment, the state bytes that keep the SoC from settling while no
// byte moves are printed to stderr (to find a free-running register the calibration after reset missed).
//
// Exit: end of file on stdin or the control pipe (the host closed it or died), or a broken stdout pipe.
// Exit code 0 then; 2 for bad arguments.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <signal.h>
#include <string>
#include <unistd.h>
#include <vector>

#include "verilated.h"
#include "Vtop.h"
#include "Vtop___024root.h"
#include "harness_ports.h"

#ifndef POLL_CYCLES
#define POLL_CYCLES 256
#endif
#ifndef MIN_SPAN
#define MIN_SPAN 8
#endif
#ifndef RESET_CYCLES
#define RESET_CYCLES 4
#endif
#ifndef SETTLE_CYCLES
#define SETTLE_CYCLES 1024
#endif
#ifndef CALIBRATE_CYCLES
#define CALIBRATE_CYCLES 4096
#endif

static uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

struct Harness {
    std::unique_ptr<VerilatedContext> ctx{new VerilatedContext};
    std::unique_ptr<Vtop> top;
    std::vector<uint8_t> rx, tx;      // rx: from the host, not yet taken by the SoC; tx: not yet written out
    size_t rx_head = 0, tx_head = 0;
    uint64_t cycles = 0, run_ns = 0;
    bool settled = false;             // fixed point reached and nothing moved since
    int span_len = MIN_SPAN;
    std::vector<uint8_t> snapshot, mask;
    bool debug = std::getenv("FXTRAIN_HARNESS_DEBUG") != nullptr;

    Harness() : top(new Vtop(ctx.get())) { snapshot.resize(sizeof(*top->rootp)); }

    // One clock cycle; returns whether a byte moved in either direction.
    bool cycle() {
        bool rx_valid = rx_head < rx.size();
        RX_VALID = rx_valid;
        RX_PAYLOAD = rx_valid ? rx[rx_head] : 0;
        TX_READY = 1;
        SET_CLOCKS(0);
        top->eval();
        bool rx_fire = rx_valid && RX_READY;
        bool tx_fire = TX_VALID;
        uint8_t out = uint8_t(TX_PAYLOAD);
        SET_CLOCKS(1);
        top->eval();
        ++cycles;
        if (rx_fire && ++rx_head == rx.size()) { rx.clear(); rx_head = 0; }
        if (tx_fire) tx.push_back(out);
        return rx_fire || tx_fire;
    }

    // Reset, let the design settle, then learn which state bytes change on their own while nothing happens
    // (free-running counters such as the engine's stall_in cycle counter); the idle rule ignores those bytes.
    void reset() {
        SET_RESETS(1);
        for (int i = 0; i < RESET_CYCLES; ++i) cycle();
        SET_RESETS(0);
        for (int i = 0; i < SETTLE_CYCLES; ++i) cycle();
        mask.assign(snapshot.size(), 0);
        const uint8_t *now = (const uint8_t *)top->rootp;
        for (int i = 0; i < CALIBRATE_CYCLES; ++i) {
            std::memcpy(snapshot.data(), now, snapshot.size());
            cycle();
            for (size_t b = 0; b < snapshot.size(); ++b) mask[b] |= uint8_t(snapshot[b] ^ now[b]);
        }
        for (uint8_t &m : mask) m = uint8_t(~m);  // 1 bits: the bits that must stay put at the fixed point
    }

    bool unchanged() const {
        const uint8_t *now = (const uint8_t *)top->rootp;
        uint8_t diff = 0;
        for (size_t b = 0; b < snapshot.size(); ++b) diff |= uint8_t((snapshot[b] ^ now[b]) & mask[b]);
        return diff == 0;
    }

    // span_len cycles; the last one is checked for a state change. Spans start short after the host wrote (a
    // request is often answered within a few cycles) and double up to POLL_CYCLES while the SoC stays busy.
    void span() {
        uint64_t start = now_ns();
        bool moved = false;
        for (int i = 0; i < span_len - 1; ++i) moved |= cycle();
        std::memcpy(snapshot.data(), (const void *)top->rootp, snapshot.size());
        moved |= cycle();
        bool same = unchanged();
        settled = same && !moved && rx_head == rx.size();
        span_len = span_len * 2 > POLL_CYCLES ? POLL_CYCLES : span_len * 2;
        if (!same && debug && rx_head == rx.size() && !moved) {
            const uint8_t *now = (const uint8_t *)top->rootp;
            for (size_t i = 0; i < snapshot.size(); ++i)
                if ((snapshot[i] ^ now[i]) & mask[i]) std::fprintf(stderr, "state byte %zu changed\n", i);
        }
        run_ns += now_ns() - start;
    }
};

static bool read_into(int fd, std::vector<uint8_t> &buf) {  // false on end of file or error
    uint8_t chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n > 0) { buf.insert(buf.end(), chunk, chunk + n); continue; }
        if (n == 0) return false;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

static bool write_all_possible(int fd, std::vector<uint8_t> &buf, size_t &head) {  // false on a broken pipe
    while (head < buf.size()) {
        ssize_t n = write(fd, buf.data() + head, buf.size() - head);
        if (n > 0) { head += size_t(n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        return false;
    }
    buf.clear();
    head = 0;
    return true;
}

int main(int argc, char **argv) {
    int ctl_in = -1, ctl_out = -1;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--control") == 0 && i + 1 < argc &&
            std::sscanf(argv[i + 1], "%d,%d", &ctl_in, &ctl_out) == 2) {
            ++i;
        } else {
            std::fprintf(stderr, "usage: %s [--control IN_FD,OUT_FD]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    set_nonblocking(0);
    set_nonblocking(1);
    if (ctl_in >= 0) set_nonblocking(ctl_in);

    Harness h;
    h.reset();
    std::vector<uint8_t> control;
    int syncs = 0;
    size_t free_bits = 0;
    for (uint8_t m : h.mask) free_bits += size_t(8 - __builtin_popcount(m));
    std::fprintf(stderr, "fxtrain harness: ready (state %zu bytes, %zu bits free-running when idle, %d cycles "
                 "per poll)\n", h.snapshot.size(), free_bits, POLL_CYCLES);
    for (;;) {
        bool idle = h.settled && h.tx.empty();
        pollfd fds[3] = {{0, POLLIN, 0}, {1, short(h.tx.empty() ? 0 : POLLOUT), 0}, {ctl_in, POLLIN, 0}};
        int nfds = ctl_in >= 0 ? 3 : 2;
        // Block only at the fixed point; while busy, poll without waiting.
        if (poll(fds, nfds, (idle || (h.settled && !h.tx.empty())) ? -1 : 0) < 0 && errno != EINTR) break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t before = h.rx.size();
            if (!read_into(0, h.rx)) break;
            if (h.rx.size() != before) { h.settled = false; h.span_len = MIN_SPAN; }
        }
        if (!h.tx.empty() && !write_all_possible(1, h.tx, h.tx_head)) break;
        if (nfds == 3 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (!read_into(ctl_in, control)) break;
            for (size_t nl; (nl = std::string(control.begin(), control.end()).find('\n')) != std::string::npos;) {
                std::string line(control.begin(), control.begin() + nl);
                control.erase(control.begin(), control.begin() + nl + 1);
                if (line == "sync") ++syncs;
            }
        }
        if (!h.settled) h.span();
        if (h.settled && !h.tx.empty() && !write_all_possible(1, h.tx, h.tx_head)) break;
        if (syncs && h.settled && h.tx.empty()) {
            char reply[64];
            int n = std::snprintf(reply, sizeof reply, "idle %llu %llu\n", (unsigned long long)h.cycles,
                                  (unsigned long long)h.run_ns);
            for (; syncs; --syncs)
                if (write(ctl_out, reply, size_t(n)) != n) return 0;
        }
    }
    std::fprintf(stderr, "fxtrain harness: %llu cycles in %.3f s of simulation\n",
                 (unsigned long long)h.cycles, h.run_ns * 1e-9);
    h.top->final();
    return 0;
}
