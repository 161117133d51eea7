// A tiny WebSocket echo server whose socket I/O goes through io_uring (liburing), for wsguard's
// tests: the probe must never be blind to it. Connections are accepted with accept4(2) (so the
// syscall-mode probe sees them born) and closed with close(2); every byte of the handshake and
// of the frames is received and sent with IORING_OP_RECV / IORING_OP_SEND, which no
// read/write-family syscall carries, so no probe can read them as a buffer.
//
//   uring_echo [PORT]    prints `READY <port>` once listening on 127.0.0.1 (0: any port)
//
// Frames are echoed one by one (same opcode and FIN; unmasked), pings answered with pongs, a
// close frame echoed and the connection closed after it. Built by the tests with
// `cc -O2 -o uring_echo uring_echo.c -luring` (Debian: liburing-dev; `cargo xtask setup`).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)
#define MAXC 1024

enum { OP_POLL = 1, OP_RECV = 2, OP_SEND = 3 };

struct conn {
  int fd, upgraded, closing;
  unsigned char in[BUF];
  size_t in_len;
  unsigned char out[BUF + 16];
  size_t out_len, out_off;
};

static struct conn *conns[MAXC];
static struct io_uring ring;

static uint64_t tag(int op, int fd) { return ((uint64_t)op << 32) | (uint32_t)fd; }

// --- SHA-1 and base64 for Sec-WebSocket-Accept (RFC 6455 §4.2.2) ---
static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  size_t nblk = (len + 9 + 63) / 64;
  for (size_t b = 0; b < nblk; b++) {
    unsigned char chunk[64];
    for (int i = 0; i < 64; i++) {
      size_t at = b * 64 + i;
      chunk[i] = at < len ? msg[at] : at == len ? 0x80 : 0;
    }
    if (b == nblk - 1) {
      uint64_t bits = (uint64_t)len * 8;
      for (int i = 0; i < 8; i++) chunk[63 - i] = (unsigned char)(bits >> (8 * i));
    }
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
      w[i] = (uint32_t)chunk[4 * i] << 24 | (uint32_t)chunk[4 * i + 1] << 16 | (uint32_t)chunk[4 * i + 2] << 8 | chunk[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
      uint32_t f, k;
      if (i < 20) f = (bb & c) | (~bb & d), k = 0x5A827999;
      else if (i < 40) f = bb ^ c ^ d, k = 0x6ED9EBA1;
      else if (i < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
      else f = bb ^ c ^ d, k = 0xCA62C1D6;
      uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d, d = c, c = rol(bb, 30), bb = a, a = t;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
  }
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
    out[o++] = t[(v >> 18) & 63];
    out[o++] = t[(v >> 12) & 63];
    out[o++] = i + 1 < len ? t[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < len ? t[v & 63] : '=';
  }
  out[o] = 0;
}

// --- io_uring submissions ---
static struct io_uring_sqe *sqe(void) {
  struct io_uring_sqe *s = io_uring_get_sqe(&ring);
  if (!s) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

static void want_recv(struct conn *c) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_recv(s, c->fd, c->in + c->in_len, BUF - c->in_len, 0);
  io_uring_sqe_set_data64(s, tag(OP_RECV, c->fd));
}

static void want_send(struct conn *c) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_send(s, c->fd, c->out + c->out_off, c->out_len - c->out_off, 0);
  io_uring_sqe_set_data64(s, tag(OP_SEND, c->fd));
}

static void want_accept(int lfd) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_poll_add(s, lfd, POLLIN);
  io_uring_sqe_set_data64(s, tag(OP_POLL, lfd));
}

static void drop_conn(struct conn *c) {
  close(c->fd);
  conns[c->fd] = NULL;
  free(c);
}

static void put(struct conn *c, const void *p, size_t n) {
  if (c->out_len + n <= sizeof c->out) {
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
  }
}

// The upgrade: a complete request head in `in`. Returns bytes used, 0 if incomplete, -1 if bad.
static long handshake(struct conn *c) {
  unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
  if (!end) return c->in_len == BUF ? -1 : 0;
  size_t head = (size_t)(end - c->in) + 4;
  char key[128] = {0};
  for (unsigned char *l = c->in; l < end;) {
    unsigned char *nl = memmem(l, (size_t)(end + 2 - l), "\r\n", 2);
    size_t n = (size_t)(nl - l);
    if (n > 18 && strncasecmp((char *)l, "Sec-WebSocket-Key:", 18) == 0) {
      unsigned char *v = l + 18;
      while (v < nl && *v == ' ') v++;
      size_t vn = (size_t)(nl - v);
      if (vn < 64) memcpy(key, v, vn);
    }
    l = nl + 2;
  }
  if (!key[0]) return -1;
  char cat[192], acc[40];
  unsigned char dig[20];
  snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
  sha1((unsigned char *)cat, strlen(cat), dig);
  base64(dig, 20, acc);
  char resp[256];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n\r\n",
                   acc);
  put(c, resp, (size_t)n);
  c->upgraded = 1;
  return (long)head;
}

// One complete client frame at `in`: echo it. Returns bytes used, 0 if incomplete.
static size_t frame(struct conn *c) {
  unsigned char *p = c->in;
  if (c->in_len < 2) return 0;
  uint64_t len = p[1] & 0x7f;
  size_t h = 2;
  if (len == 126) {
    if (c->in_len < 4) return 0;
    len = (uint64_t)p[2] << 8 | p[3], h = 4;
  } else if (len == 127) {
    if (c->in_len < 10) return 0;
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
    h = 10;
  }
  int masked = p[1] & 0x80;
  size_t mh = h + (masked ? 4 : 0);
  if (len > BUF - 16) {  // larger than this tiny server buffers: give up on the connection
    c->closing = 1;
    return c->in_len;
  }
  if (c->in_len < mh + len) return 0;
  unsigned char *pl = p + mh;
  if (masked)
    for (uint64_t i = 0; i < len; i++) pl[i] ^= p[h + (i & 3)];
  int op = p[0] & 0x0f;
  unsigned char hdr[10];
  size_t hn = 2;
  hdr[0] = (unsigned char)((p[0] & 0x80) | (op == 9 ? 10 : op));
  if (len < 126) hdr[1] = (unsigned char)len;
  else if (len < 65536) hdr[1] = 126, hdr[2] = (unsigned char)(len >> 8), hdr[3] = (unsigned char)len, hn = 4;
  else {
    hdr[1] = 127, hn = 10;
    for (int i = 0; i < 8; i++) hdr[2 + i] = (unsigned char)(len >> (56 - 8 * i));
  }
  if (op != 10) {  // a pong from the client needs no answer
    put(c, hdr, hn);
    put(c, pl, len);
  }
  if (op == 8) c->closing = 1;
  return mh + len;
}

static void on_recv(struct conn *c, int res) {
  if (res <= 0) {
    drop_conn(c);
    return;
  }
  c->in_len += (size_t)res;
  for (;;) {
    size_t n;
    if (!c->upgraded) {
      long h = handshake(c);
      if (h < 0) {
        drop_conn(c);
        return;
      }
      n = (size_t)h;
    } else if (c->closing) {
      break;
    } else {
      n = frame(c);
    }
    if (n == 0) break;
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
  }
  if (c->out_len > c->out_off) want_send(c);
  else if (c->closing) drop_conn(c);
  else want_recv(c);
}

static void on_send(struct conn *c, int res) {
  if (res < 0) {
    drop_conn(c);
    return;
  }
  c->out_off += (size_t)res;
  if (c->out_off < c->out_len) {
    want_send(c);
    return;
  }
  c->out_len = c->out_off = 0;
  if (c->closing) drop_conn(c);
  else want_recv(c);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 128)) {
    perror("bind/listen");
    return 1;
  }
  socklen_t al = sizeof a;
  getsockname(lfd, (struct sockaddr *)&a, &al);
  int rc = io_uring_queue_init(256, &ring, 0);
  if (rc < 0) {
    fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-rc));
    return 1;
  }
  printf("READY %d\n", ntohs(a.sin_port));
  fflush(stdout);
  want_accept(lfd);
  for (;;) {
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) continue;
    uint64_t t = io_uring_cqe_get_data64(cqe);
    int res = cqe->res, op = (int)(t >> 32), fd = (int)(uint32_t)t;
    io_uring_cqe_seen(&ring, cqe);
    if (op == OP_POLL) {
      int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (cfd >= 0 && cfd < MAXC) {
        struct conn *c = calloc(1, sizeof *c);
        c->fd = cfd;
        conns[cfd] = c;
        want_recv(c);
      } else if (cfd >= 0) {
        close(cfd);
      }
      want_accept(lfd);
    } else if (fd >= 0 && fd < MAXC && conns[fd]) {
      if (op == OP_RECV) on_recv(conns[fd], res);
      else on_send(conns[fd], res);
    }
  }
}
